"""SageMakerEnvironment, trainer layout, SMDDPStrategy selection and the container entry's parsing, in-process.

The multi-process behaviour (real process groups, torchrun, SIGTERM, sweeps) is in
test_distributed_entry.py, test_distributed_ranks.py and test_distributed_sweep.py.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

from skuvision.distributed.environment import SageMakerEnvironment, launcher_rank
from skuvision.distributed.layout import cluster_layout, local_process_count
from skuvision.errors import ConfigError, UserError

LAUNCH_VARS = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "GROUP_WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "SM_HOSTS",
    "SM_CURRENT_HOST",
    "SM_NUM_GPUS",
    "SM_HPS",
    "NODE_RANK",
)


@pytest.fixture
def clean_env(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def two_hosts(clean_env):
    clean_env.setenv("SM_HOSTS", '["algo-1","algo-2"]')
    clean_env.setenv("SM_CURRENT_HOST", "algo-2")
    return clean_env


# -- SageMakerEnvironment ------------------------------------------------------------------------
def test_detect_needs_both_host_variables(clean_env):
    assert not SageMakerEnvironment.detect()
    clean_env.setenv("SM_HOSTS", '["algo-1"]')
    assert not SageMakerEnvironment.detect()
    clean_env.setenv("SM_CURRENT_HOST", "algo-1")
    assert SageMakerEnvironment.detect()


def test_ranks_from_torchrun_variables(two_hosts):
    two_hosts.setenv("WORLD_SIZE", "16")
    two_hosts.setenv("RANK", "11")
    two_hosts.setenv("LOCAL_RANK", "3")
    env = SageMakerEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (16, 11, 3, 1)
    assert env.creates_processes_externally and env.processes_per_host() == 8
    env.set_world_size(2)
    env.set_global_rank(0)  # the launcher's numbers win over Lightning's guesses
    assert (env.world_size(), env.global_rank()) == (16, 11)


def test_ranks_from_open_mpi_variables_alone(two_hosts):
    two_hosts.setenv("OMPI_COMM_WORLD_SIZE", "16")
    two_hosts.setenv("OMPI_COMM_WORLD_RANK", "9")
    two_hosts.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    env = SageMakerEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (16, 9, 1, 1)
    assert launcher_rank() == 9


def test_main_address_is_the_first_host_unless_master_addr_and_port_defaults_to_7777(two_hosts):
    env = SageMakerEnvironment()
    assert (env.main_address, env.main_port) == ("algo-1", 7777)
    two_hosts.setenv("MASTER_ADDR", "10.0.0.5")
    two_hosts.setenv("MASTER_PORT", "29500")
    assert (env.main_address, env.main_port) == ("10.0.0.5", 29500)


@pytest.mark.parametrize(
    "devices, nodes, world, expected",
    [
        (8, 2, "16", None),
        (4, 2, "16", "trainer.devices=4 x trainer.num_nodes=2 = 8 processes, but the launcher started 16"),
        (8, 1, "16", "trainer.num_nodes=1 but this SageMaker job has 2 host(s)"),
        (1, 2, None, "no launcher started the ranks"),
    ],
)
def test_validate_settings_says_what_does_not_add_up(two_hosts, devices, nodes, world, expected):
    if world:
        two_hosts.setenv("WORLD_SIZE", world)
    if expected is None:
        env = SageMakerEnvironment()
        env.validate_settings(devices, nodes)
        assert env.world_size() == devices * nodes and env.num_hosts == nodes
        return
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        SageMakerEnvironment().validate_settings(devices, nodes)


@pytest.mark.parametrize(
    "hosts, current, message",
    [
        ("algo-1", "algo-1", "expected a JSON list"),
        ('["algo-1"]', "algo-9", "SM_CURRENT_HOST='algo-9' is not in SM_HOSTS"),
    ],
)
def test_bad_host_variables_name_the_variable(clean_env, hosts, current, message):
    clean_env.setenv("SM_HOSTS", hosts)
    clean_env.setenv("SM_CURRENT_HOST", current)
    with pytest.raises(ConfigError, match=message):
        SageMakerEnvironment().node_rank()


# -- trainer layout --------------------------------------------------------------------------------
def test_layout_on_sagemaker_fills_auto_from_the_hosts_and_the_launcher(two_hosts):
    two_hosts.setenv("WORLD_SIZE", "16")
    two_hosts.setenv("SM_NUM_GPUS", "8")
    assert cluster_layout({"devices": "auto", "num_nodes": "auto"}) == {"devices": 8, "num_nodes": 2}
    assert cluster_layout({"devices": 8, "num_nodes": 2}) == {}
    with pytest.raises(ConfigError, match="trainer.num_nodes=1 but this SageMaker job has 2"):
        cluster_layout({"devices": 1, "num_nodes": 1})  # trainer=default on a 2-host job


def test_layout_under_smddp_launcher_picks_the_smddp_strategy(two_hosts):
    from skuvision.distributed.strategy import SMDDPStrategy

    for var, value in (
        ("OMPI_COMM_WORLD_SIZE", "16"),
        ("OMPI_COMM_WORLD_RANK", "0"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
    ):
        two_hosts.setenv(var, value)
    layout = cluster_layout({"devices": "auto", "num_nodes": "auto", "strategy": "auto"})
    # SMDDP validates/tests under no_grad: torch 2.4 register_backend collectives fail on inference tensors
    assert isinstance(layout.pop("strategy"), SMDDPStrategy)
    assert layout == {"devices": 8, "num_nodes": 2, "inference_mode": False}
    ddp = cluster_layout({"devices": "auto", "num_nodes": "auto", "strategy": "ddp"})
    assert "strategy" not in ddp and "inference_mode" not in ddp


def test_smddp_trainer_config_turns_inference_mode_off(clean_env):
    from skuvision.config.compose import compose

    smddp = compose(["trainer=smddp"]).trainer
    assert cluster_layout(smddp).get("inference_mode") is False
    assert cluster_layout({"devices": 1, "num_nodes": 1, "strategy": "smddp"}).get("inference_mode") is False
    assert "inference_mode" not in cluster_layout(compose(["trainer=ddp"]).trainer)


def test_layout_off_sagemaker(clean_env):
    assert cluster_layout({"devices": "auto", "num_nodes": "auto"}) == {"num_nodes": 1}
    assert cluster_layout({"devices": 2, "num_nodes": 1}) == {}
    for var, value in (
        ("TORCHELASTIC_RUN_ID", "x"),
        ("GROUP_WORLD_SIZE", "2"),
        ("LOCAL_WORLD_SIZE", "4"),
        ("WORLD_SIZE", "8"),
    ):
        clean_env.setenv(var, value)
    assert cluster_layout({"devices": "auto", "num_nodes": "auto"}) == {"devices": 4, "num_nodes": 2}
    with pytest.raises(ConfigError, match="launcher started 8"):
        cluster_layout({"devices": 2, "num_nodes": 1})


@pytest.mark.parametrize("devices, expected", [(2, 2), ("3", 3), ([0, 1], 2), ("0,1,2", 3), ("auto", 1)])
def test_local_process_count(devices, expected):
    assert local_process_count({"devices": devices, "accelerator": "cpu"}) == expected


# -- strategy --------------------------------------------------------------------------------------
def test_smddp_is_registered_and_selectable_from_the_config_tree(clean_env):
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import StrategyRegistry

    from skuvision.config.compose import compose
    from skuvision.distributed.strategy import SMDDPStrategy

    assert StrategyRegistry["smddp"]["strategy"] is SMDDPStrategy
    trainer = L.Trainer(strategy="smddp", accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy, SMDDPStrategy) and trainer.strategy.process_group_backend == "smddp"
    cfg = compose(["trainer=smddp", "trainer.strategy.fallback=gloo"]).trainer
    strategy = instantiate(cfg.strategy)
    assert isinstance(strategy, SMDDPStrategy) and strategy.fallback == "gloo"
    assert (cfg.devices, cfg.num_nodes, cfg.use_distributed_sampler) == ("auto", "auto", False)


def test_smddp_strategy_uses_the_sagemaker_environment_there(two_hosts):
    from skuvision.distributed.strategy import SMDDPStrategy

    assert isinstance(SMDDPStrategy().cluster_environment, SageMakerEnvironment)


@pytest.fixture
def no_smddp(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.rstrip("/").endswith("stubs")])
    for name in [m for m in sys.modules if m.startswith("smdistributed")]:
        monkeypatch.delitem(sys.modules, name)


def test_fallback_auto_uses_gloo_on_cpu_with_one_warning_naming_it(no_smddp):
    from skuvision.distributed.strategy import resolve_backend

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto", torch.device("cpu")) == "gloo"
    messages = [str(w.message) for w in caught if "SMDDP" in str(w.message)]
    assert len(messages) == 1 and "using the gloo backend" in messages[0] and "not installed" in messages[0]


@pytest.mark.parametrize(
    "fallback, message",
    [
        ("error", "SMDDP is not available: smdistributed.dataparallel.torch.torch_smddp is not installed"),
        ("nccl", "trainer.strategy.fallback=nccl needs GPUs"),
    ],
)
def test_fallbacks_that_cannot_work_here_stop_clearly(no_smddp, fallback, message):
    from skuvision.distributed.strategy import resolve_backend

    with pytest.raises(ConfigError, match=message):
        resolve_backend(fallback, torch.device("cpu"))


def test_bad_strategy_settings_are_config_errors():
    from skuvision.distributed.strategy import SMDDPStrategy

    with pytest.raises(ConfigError, match="trainer.strategy.fallback=sometimes: use one of auto, nccl, gloo, error"):
        SMDDPStrategy(fallback="sometimes")
    with pytest.raises(ConfigError, match="process_group_backend=nccl"):
        SMDDPStrategy(process_group_backend="nccl")


# -- entry -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ['["a=1", "b=2"]', json.dumps(json.dumps(["a=1", "b=2"]))])
def test_entry_decodes_the_overrides_hyperparameter(raw):
    from skuvision.sagemaker.overrides import decode_overrides

    assert decode_overrides(raw) == ["a=1", "b=2"]


@pytest.mark.parametrize(
    "raw, message", [("a=1", "not JSON"), ('{"a": 1}', "expected a JSON list"), ("[1, 2]", "expected a JSON list")]
)
def test_entry_rejects_bad_overrides(raw, message):
    from skuvision.sagemaker.overrides import decode_overrides

    with pytest.raises(UserError, match=message):
        decode_overrides(raw)


def test_entry_reads_overrides_from_argv_then_sm_hps_and_keeps_paths_for_itself(clean_env):
    from skuvision.entry.sagemaker_job import read_overrides

    clean_env.setenv("SM_HPS", json.dumps({"overrides": json.dumps(["model.freeze_depth=3"])}))
    assert read_overrides([]) == ["model.freeze_depth=3"]
    assert read_overrides(["--overrides", '["seed=1"]']) == ["seed=1"]
    for override in ("paths=default", "env=local", "+env=sagemaker"):
        with pytest.raises(ConfigError, match=r"the container selects env=sagemaker \(and its paths\) itself"):
            read_overrides(["--overrides", json.dumps([override])])


def test_rank_overrides_pin_the_run_dir_and_keep_job_files_to_rank_zero():
    from skuvision.distributed.launch import rank_overrides

    assert rank_overrides("/opt/ml/output/data/run", 0, job_files=True) == ["hydra.run.dir='/opt/ml/output/data/run'"]
    assert rank_overrides("/r", 3, job_files=True) == [
        "hydra.run.dir='/r'",
        "hydra.output_subdir=null",
        "hydra.job_logging.root.handlers=[console]",
    ]


def test_export_model_artifacts_copies_best_checkpoint_label_map_and_metrics(tmp_path):
    from skuvision.entry.sagemaker_job import export_model_artifacts

    run_dir, ckpt = tmp_path / "run", tmp_path / "checkpoints" / "epoch_003.ckpt"
    ckpt.parent.mkdir()
    run_dir.mkdir()
    label_map = {"sku_to_index": {"SKU-1": 0, "SKU-2": 1}}
    torch.save({"state_dict": {"w": torch.ones(2)}, "label_map": label_map}, ckpt)
    (run_dir / "metrics.json").write_text(json.dumps({"val/top1": 0.9, "best_checkpoint": str(ckpt)}))
    written = export_model_artifacts(run_dir, tmp_path / "model")
    assert sorted(p.name for p in written) == ["label_map.json", "metrics.json", "model.ckpt"]
    assert json.loads((tmp_path / "model" / "label_map.json").read_text()) == label_map
    assert json.loads((tmp_path / "model" / "metrics.json").read_text()) == {
        "val/top1": 0.9,
        "best_checkpoint": "model.ckpt",
    }
    assert (tmp_path / "model" / "model.ckpt").read_bytes() == ckpt.read_bytes()


def test_ckpt_path_auto_resumes_only_when_a_last_checkpoint_exists(tmp_path):
    from skuvision.train import resolve_checkpoint

    assert resolve_checkpoint("auto", tmp_path, str(tmp_path / "ckpts")) is None
    (tmp_path / "ckpts").mkdir()
    torch.save({"global_step": 3}, tmp_path / "ckpts" / "last.ckpt")
    assert resolve_checkpoint("auto", tmp_path, str(tmp_path / "ckpts")) == str(tmp_path / "ckpts" / "last.ckpt")
    assert resolve_checkpoint("last", tmp_path, str(tmp_path / "ckpts")) == str(tmp_path / "ckpts" / "last.ckpt")
    with pytest.raises(ConfigError, match="ckpt_path=last"):
        resolve_checkpoint("last", tmp_path)


def test_sagemaker_env_routes_data_checkpoints_and_resume(clean_env, tmp_path):
    from skuvision.config.compose import compose

    clean_env.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "train"))
    clean_env.setenv("SKUVISION_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    cfg = compose(["env=sagemaker", "experiment=resnet152_fmcg"], return_hydra_config=True)
    assert cfg.data.root == str(tmp_path / "train")  # the experiment's `root: ???` reads the channel
    assert cfg.callbacks.model_checkpoint.dirpath == str(tmp_path / "ckpt") == cfg.callbacks.resume_checkpoint.dirpath
    assert (cfg.ckpt_path, cfg.trainer.devices, cfg.trainer.num_nodes) == ("auto", "auto", "auto")
    assert compose(["env=sagemaker"]).data.root.endswith("/quickstart/shards")  # explicit roots win
    assert cfg.paths.train_channel == str(tmp_path / "train") and cfg.hydra.runtime.choices.paths == "sagemaker"


def test_sweep_relaunch_only_for_script_launched_ddp_strategies():
    from skuvision.distributed.job_ranks import _strategy_launches_script

    for strategy in (
        "ddp",
        "auto",
        None,
        "smddp",
        "ddp_find_unused_parameters_true",
        {"_target_": "skuvision.distributed.strategy.SMDDPStrategy", "fallback": "auto"},
    ):
        assert _strategy_launches_script(strategy), strategy
    for strategy in (
        "ddp_spawn",
        "ddp_fork",
        "ddp_notebook",
        "single_device",
        {"_target_": "lightning.pytorch.strategies.DDPStrategy", "start_method": "spawn"},
    ):
        assert not _strategy_launches_script(strategy), strategy


def test_a_lost_peer_is_named_and_other_errors_are_left_alone():
    from skuvision.distributed.failures import lost_peer_message

    gloo = RuntimeError("[pair.cc:545] Read error [127.0.0.1]:35210: Connection reset by peer. This is typically ...")
    line = lost_peer_message(gloo, rank=0, world_size=2)
    assert line.startswith("rank 0 of 2 lost contact with another rank ([pair.cc:545] Read error")
    assert "\n" not in line and "ckpt_path=last" in line
    assert lost_peer_message(RuntimeError("Timed out waiting 60000ms for recv operation"), 1, 4)
    assert lost_peer_message(gloo, rank=0, world_size=1) is None  # no peers to lose
    assert lost_peer_message(RuntimeError("CUDA out of memory"), rank=0, world_size=2) is None
