"""Checkpoints are complete or absent, rotate, and restore exactly what resuming needs."""

import torch

from finetune_trainer import checkpoint as ckpt


def _parts(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # frozen: must not be saved
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_save_and_load_round_trip(tmp_path):
    model, opt, sched = _parts()
    path = ckpt.save_checkpoint(tmp_path, 7, model, opt, sched, {"total_steps": 10}, keep_last=2)
    assert path.name == "step-00000007"
    expected_next = torch.rand(3)
    torch.manual_seed(123)  # disturb the RNG, restoring must undo it
    fresh, fopt, fsched = _parts(seed=1)
    state = ckpt.load_checkpoint(path, fresh, fopt, fsched)
    assert state == {"step": 7, "total_steps": 10}
    for (n, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), n
    assert fsched.last_epoch == sched.last_epoch
    assert torch.equal(torch.rand(3), expected_next), "RNG state (dropout) must resume exactly"


def test_only_trainable_parameters_are_saved(tmp_path):
    from safetensors.torch import load_file

    model, opt, sched = _parts()
    path = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {}, keep_last=1)
    assert set(load_file(path / "trainable.safetensors")) == {"0.bias", "1.weight", "1.bias"}


def test_rotation_keeps_the_newest(tmp_path):
    model, opt, sched = _parts()
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(tmp_path, step, model, opt, sched, {}, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000030", "step-00000040"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000040"


def test_half_written_checkpoint_is_ignored(tmp_path):
    model, opt, sched = _parts()
    ckpt.save_checkpoint(tmp_path, 10, model, opt, sched, {}, keep_last=3)
    # a pod killed mid-write leaves a temp dir, and a dir without state.json
    (ckpt.checkpoints_dir(tmp_path) / ".step-00000020.tmp").mkdir()
    (ckpt.checkpoints_dir(tmp_path) / "step-00000030").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000010"


def test_no_checkpoints(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
