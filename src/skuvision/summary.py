"""Parameter table for a config, without data: what a freeze depth costs before a job is launched."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from skuvision.config.compose import compose
from skuvision.config.schema import validate
from skuvision.errors import ConfigError
from skuvision.model.module import SKUClassifier


def model_summary(overrides: list[str]) -> dict:
    cfg = compose(overrides)
    validate(cfg, need_data=False)
    num_classes = cfg.model.get("num_classes")
    if not num_classes:
        raise ConfigError("model.num_classes is not set: summary reads no data, so pass e.g. model.num_classes=12000")
    model = SKUClassifier(
        num_classes=int(num_classes),
        backbone=cfg.model.backbone,
        pretrained=False,
        pretrained_file=None,
        freeze_depth=cfg.model.freeze_depth,
        head=cfg.model.head,
        aux_heads=False,
    )
    table = model.parameter_table()
    table.update(backbone=cfg.model.backbone, num_classes=int(num_classes))
    return table


def render_summary(table: dict) -> None:
    t = Table(title=f"{table['backbone']} -> {table['num_classes']} SKUs, freeze_depth={table['freeze_depth']}")
    t.add_column("stage")
    t.add_column("parameters", justify="right")
    t.add_column("trainable")
    for stage in table["stages"]:
        t.add_row(stage["name"], f"{stage['params']:,}", "yes" if stage["trainable"] else "frozen")
    t.add_section()
    t.add_row("total", f"{table['total']:,}", "")
    t.add_row("trainable", f"{table['trainable']:,}", f"{table['trainable'] / table['total']:.1%}")
    Console().print(t)
