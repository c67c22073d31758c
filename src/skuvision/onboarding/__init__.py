"""Monthly onboarding: extend a trained model with new SKUs on a frozen backbone (README "Monthly onboarding")."""
