"""Model: timm backbone split into freezable stages, MLP heads, LightningModule."""
