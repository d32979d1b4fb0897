"""The LightningModule and the training entry point, through the real composed config and Trainer."""

import json

import pytest
import torch

from conftest import compose_train
from pprl.runtime.errors import ConfigError
from pprl.train import build_model, train


def test_tiny_run_writes_the_run_dir_contract(tiny_run):
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert (tiny_run / ".hydra" / "config.yaml").is_file()
    pngs = sorted((tiny_run / "figures" / "identity_swap").glob("*.png"))
    assert [p.name for p in pngs] == ["epoch_001.png", "epoch_002.png"]
    summary = json.loads((tiny_run / "results" / "train_summary.json").read_text())
    for key in ("wall_seconds", "epochs", "d3_expression_acc_fake", "d2_target_acc_fake"):
        assert key in summary
    assert summary["epochs"] == 2
    assert 0.0 <= summary["d3_expression_acc_fake"] <= 1.0
    # 2:1 schedule: two generator steps per discriminator step, counted by the optimizers themselves
    assert summary["g_steps"] == 2 * summary["d_steps"] > 0
    assert summary["global_step"] == summary["g_steps"] + summary["d_steps"]


@pytest.mark.parametrize("ratio", [1, 3])
def test_update_ratio_counts_optimizer_steps(tmp_path, ratio):
    cfg = compose_train(tmp_path, [f"train.g_steps_per_d_step={ratio}", "trainer.max_epochs=1", "logger=none"])
    summary = train(cfg)
    batches = summary["d_steps"]
    assert batches > 0 and summary["g_steps"] == ratio * batches


def test_wandb_offline_logger(tmp_path):
    cfg = compose_train(tmp_path, ["logger=wandb", "trainer.max_epochs=1"])
    train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, "an offline W&B run should be written under the run dir"
    import wandb

    assert wandb.run is None  # finished after the run


def test_csv_logger_records_every_loss_term(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1"])
    train(cfg)
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for term in ("train/D/d1_real_step", "train/D/d2_identity_step", "train/D/acc_fake_d1_step",
                 "train/G/g1_real_fake_step", "train/G/g4_kl_step", "train/G/acc_fake_d3_step",
                 "val/d3_expression_acc_fake"):
        assert term in header, term


def test_generator_step_moves_only_the_generator(tmp_path):
    cfg = compose_train(tmp_path)
    from pprl.datasets import FaceDataModule

    dm = FaceDataModule(cfg.dataset, batch_size=8)
    dm.setup()
    model = build_model(cfg, dm.splits)
    x, ident, expr = next(iter(dm.train_dataloader()))
    opt_g, opt_d = model.configure_optimizers()
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    before_e = [p.detach().clone() for p in model.encoder.parameters()]
    model.toggle_optimizer = lambda opt: None  # no Trainer attached: plain backward
    model.untoggle_optimizer = lambda opt: None
    model.manual_backward = lambda loss: loss.backward()
    model.generator_step(x, ident, expr, opt_g)
    assert all(torch.equal(a, b) for a, b in zip(before_d, model.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_e, model.encoder.parameters()))
    assert int(model.g_steps) == 1 and int(model.d_steps) == 0


@pytest.mark.parametrize("override, key", [
    ("lambda.g2=-0.1", "lambda.g2"),
    ("train.g_steps_per_d_step=0", "train.g_steps_per_d_step"),
    ("dataset.image_size=40", "dataset.image_size"),
    ("loss.generator=wgan", "loss.generator"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, override, key):
    cfg = compose_train(tmp_path, [override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(cfg)
