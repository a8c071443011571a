"""Checkpoints are complete or absent, checksummed, space-checked, rotate, and restore exactly what resuming needs."""

import errno

import pytest
import torch

from finetune_trainer import checkpoint as ckpt
from finetune_trainer.distributed import Dist
from finetune_trainer.replicated import Replicated

ONE = Dist(0, 1, 0, torch.device("cpu"))


def _strategy(seed=0) -> Replicated:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # frozen: must not be saved
    s = Replicated(model, ONE, "cpu")
    s.setup_optimizer(lambda ps: torch.optim.AdamW(ps, lr=0.1),
                      lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda i: 1.0 / (i + 1)))
    model(torch.ones(1, 4)).sum().backward()
    s.step(1.0, lambda norm: None)
    return s


def _save(tmp_path, s: Replicated, step: int, keep_last: int = 2, need: int = 0, meta=None):
    return ckpt.write(tmp_path, step, lambda folder: s.write_checkpoint(folder, 0), meta or {"total_steps": 10},
                      keep_last, ONE, need)


def test_save_and_load_round_trip(tmp_path):
    s = _strategy()
    path = _save(tmp_path, s, 7)
    assert path.name == "step-00000007" and ckpt.verify(path) is None
    expected_next = torch.rand(3)
    torch.manual_seed(123)  # disturb the RNG, restoring must undo it
    fresh = _strategy(seed=1)
    fresh.read_checkpoint(path, 0)
    ckpt.restore_rng(path, 0)
    assert ckpt.read_manifest(path)["step"] == 7
    for (n, a), (_, b) in zip(s.model.named_parameters(), fresh.model.named_parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), n
    assert fresh.scheduler.last_epoch == s.scheduler.last_epoch
    assert torch.equal(torch.rand(3), expected_next), "RNG state (dropout) must resume exactly"


def test_only_trainable_parameters_are_saved(tmp_path):
    from safetensors.torch import load_file

    path = _save(tmp_path, _strategy(), 1, keep_last=1)
    assert set(load_file(path / "trainable.safetensors")) == {"0.bias", "1.weight", "1.bias"}


def test_rotation_keeps_the_newest(tmp_path):
    s = _strategy()
    for step in (10, 20, 30, 40):
        _save(tmp_path, s, step)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000030", "step-00000040"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000040"


def test_half_written_checkpoint_is_ignored_and_cleaned(tmp_path):
    _save(tmp_path, _strategy(), 10, keep_last=3)
    # a pod killed mid-write leaves a temp dir, and a dir without its manifest
    (ckpt.checkpoints_dir(tmp_path) / ".step-00000020.tmp").mkdir()
    (ckpt.checkpoints_dir(tmp_path) / "step-00000030").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000010"
    ckpt.remove_partial(tmp_path)
    assert not (ckpt.checkpoints_dir(tmp_path) / ".step-00000020.tmp").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "empty-manifest"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_and_says_so(tmp_path, damage):
    s = _strategy()
    _save(tmp_path, s, 10, keep_last=3)
    newest = _save(tmp_path, s, 20, keep_last=3)
    f = newest / "optimizer.pt"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "delete":
        f.unlink()
    else:
        (newest / ckpt.MANIFEST).write_text("")
    said = []
    chosen = ckpt.choose_for_resume(tmp_path, ONE, said.append)
    assert chosen.name == "step-00000010"
    assert "step-00000020 is damaged" in said[0] and "falling back to the previous one" in said[0]


def test_not_enough_space_is_refused_before_writing_with_the_numbers(tmp_path):
    s = _strategy()
    _save(tmp_path, s, 10)
    with pytest.raises(ckpt.DiskFull, match=r"checkpoint at step 20 needs 1048576\.0 GiB, .* GiB free"):
        _save(tmp_path, s, 20, need=2 ** 50)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000010"]
    assert not list(ckpt.checkpoints_dir(tmp_path).glob(".*.tmp"))


def test_a_disk_that_fills_while_writing_leaves_the_previous_checkpoint_and_nothing_partial(tmp_path):
    s = _strategy()
    previous = _save(tmp_path, s, 10)

    def full(folder):
        (folder / "half.bin").write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ckpt.DiskFull, match="filled up while writing.*previous checkpoint is intact"):
        ckpt.write(tmp_path, 20, full, {}, 2, ONE, 0)
    assert ckpt.list_checkpoints(tmp_path) == [previous] and ckpt.verify(previous) is None
    assert not list(ckpt.checkpoints_dir(tmp_path).glob(".*.tmp"))


def test_a_checkpoint_of_another_run_is_refused_naming_the_fields(tmp_path):
    path = _save(tmp_path, _strategy(), 5, meta={"shaping_fields": {"method.lora.rank": 8, "training.seed": 1}})
    with pytest.raises(ckpt.CheckpointMismatch, match=r"spec.method.lora.rank: was 8, now 16"):
        ckpt.check_same_run(path, {"method.lora.rank": 16, "training.seed": 1})
    ckpt.check_same_run(path, {"method.lora.rank": 8, "training.seed": 1})  # the same run resumes


def test_no_checkpoints(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    assert ckpt.choose_for_resume(tmp_path, ONE, print) is None


def test_the_step_guard_stops_on_a_non_finite_loss_or_gradient_norm_and_names_the_step(tmp_path):
    from types import SimpleNamespace

    from finetune_api import load_job_text
    from finetune_api.trainer_config import LaunchPlan, TrainerConfig
    from finetune_trainer.session import NonFiniteLoss, Session, guard

    job = load_job_text("apiVersion: finetune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: t}\nspec:\n"
                        "  model: {path: m}\n  dataset: {paths: [d.jsonl], format: text}\n"
                        f"  output: {{path: {tmp_path}}}\n")
    s = Session(TrainerConfig(job=job, output_dir=str(tmp_path), plan=LaunchPlan(strategy="single")), ONE)
    s.strat, s.step = SimpleNamespace(lr=lambda: 0.5), 6
    guard(s, 1.25)(3.0)  # finite: passes
    with pytest.raises(NonFiniteLoss, match=r"step 7: gradient norm inf \(learning rate 0.5"):
        guard(s, 1.25)(float("inf"))
    with pytest.raises(NonFiniteLoss, match="step 7: loss nan"):
        guard(s, float("nan"))(1.0)
