import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from avlib.config import TrainingConfig
from avlib.template import media_token_ids
from avlib.train import CHECKPOINT, FINAL, TrainingDiverged, batch_indices, find_checkpoint, lr_factor, train, trainable_state

import train_helpers as helpers

DDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "cpu_ddp.yaml"

HELPER = Path(__file__).with_name("train_helpers.py")


def test_batches_are_a_pure_function_of_seed_and_step():
    assert batch_indices(10, 4, 3, seed=1) == batch_indices(10, 4, 3, seed=1)
    # consecutive steps tile seeded permutations, epoch after epoch
    first_epoch = sum((batch_indices(10, 5, s, 0) for s in range(2)), [])
    assert sorted(first_epoch) == list(range(10))
    assert batch_indices(10, 4, 2, 0)[:2] == batch_indices(10, 2, 4, 0)  # a window that crosses an epoch
    assert batch_indices(10, 4, 0, 0) != batch_indices(10, 4, 0, 1)


def test_learning_rate_schedule():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_training_lowers_the_loss_and_saves_only_trained_parts(tmp_path):
    model, result = helpers.run(tmp_path / "run", steps=30)
    metrics = json.loads((tmp_path / "run" / "dvclive" / "metrics.json").read_text())
    # A random frozen LLM has a near-uniform output head, so LoRA moves the loss only so far.
    assert result.final_loss < _first_loss(tmp_path / "run") - 0.2
    assert sorted(p.name for p in (tmp_path / "run" / FINAL).iterdir()) == [
        "audio_projector.safetensors", "lora", "parts.json", "vision_projector.safetensors"]
    assert (tmp_path / "run" / "dvclive" / "plots" / "metrics" / "loss.tsv").is_file()
    assert metrics["final_loss"] == pytest.approx(result.final_loss)


def _first_loss(run: Path) -> float:
    rows = (run / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    return float(rows[1].split("\t")[-1])


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    steps = 60
    reference, _ = helpers.run(tmp_path / "reference", steps=steps)
    expected = trainable_state(reference)

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(HELPER), str(killed), str(steps)], env=env)
    deadline = time.monotonic() + 120
    while find_checkpoint(killed / CHECKPOINT) is None:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads((find_checkpoint(killed / CHECKPOINT) / "progress.json").read_text())["step"]
    assert 0 < done < steps and not (killed / FINAL).exists(), "killed mid-way"

    resumed, result = helpers.run(killed, steps=steps)  # picks up the checkpoint
    assert result.steps == steps
    for name, value in trainable_state(resumed).items():
        assert torch.equal(value, expected[name]), name


def test_stop_and_resume_in_process_equals_uninterrupted(tmp_path):
    reference, _ = helpers.run(tmp_path / "a", steps=8)
    helpers.run(tmp_path / "b", steps=8, stop_after=5)  # checkpoint at 4; step 5 is lost, as in a crash
    resumed, _ = helpers.run(tmp_path / "b", steps=8)
    for name, value in trainable_state(resumed).items():
        assert torch.equal(value, trainable_state(reference)[name]), name


def test_matched_baseline(tmp_path):
    av_model, av = helpers.run(tmp_path / "av", steps=6, record_batches=True)
    vo_model, vo = helpers.run(tmp_path / "vo", steps=6, use_audio=False, record_batches=True)
    assert av.batches == vo.batches  # identical batches in identical order
    dataset = helpers.make_dataset()
    _, audio_id = media_token_ids(av_model.tokenizer)
    newline = av_model.tokenizer.encode("\n", add_special_tokens=False)
    for indices in av.batches:
        items = [dataset[i] for i in indices]
        with_audio, without = av_model.collate(items), vo_model.collate(items)
        assert torch.equal(with_audio["labels"][with_audio["labels"] != -100], without["labels"][without["labels"] != -100])
        for row, item in enumerate(items):
            ids = with_audio["input_ids"][row][with_audio["attention_mask"][row] == 1].tolist()
            if item["audio_features"] is not None:  # drop the "\n<audio>...<audio>" line: what remains is the twin's prompt
                first = ids.index(audio_id)
                ids = ids[: first - len(newline)] + [t for t in ids[first:] if t != audio_id]
            twin = without["input_ids"][row][without["attention_mask"][row] == 1].tolist()
            assert ids == twin
    assert set(vo_model.trained_parts()) == {"vision_projector", "lora"}


class Poisonable(list):
    """A dataset whose video features turn to NaN once `poisoned` is set."""

    poisoned = False

    def __getitem__(self, i):
        item = super().__getitem__(i)
        return {**item, "video_features": item["video_features"] * float("nan")} if self.poisoned else item


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    dataset = Poisonable(helpers.make_dataset())
    cfg = TrainingConfig(steps=10, batch_size=4, lr=5e-3, warmup=1, checkpoint_every=2)
    train(helpers.make_model(), dataset, "finetune", cfg, tmp_path, lora=helpers.LORA, progress=False, stop_after=4)
    dataset.poisoned = True
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4.*last good checkpoint is .*checkpoint"):
        train(helpers.make_model(), dataset, "finetune", cfg, tmp_path, lora=helpers.LORA, progress=False)
    assert json.loads((tmp_path / CHECKPOINT / "progress.json").read_text())["step"] == 4
    state = load_file(find_checkpoint(tmp_path / CHECKPOINT) / "trainable.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values())
    dataset.poisoned = False
    model = helpers.make_model()
    result = train(model, dataset, "finetune", cfg, tmp_path, lora=helpers.LORA, progress=False)  # the checkpoint resumes
    assert math.isfinite(result.final_loss) and (tmp_path / FINAL / "parts.json").is_file()


def test_rows_grouped_by_length_give_the_batch_its_own_loss_and_gradient(make_model, samples, lora):
    from avlib.template import IGNORE_INDEX, split_by_length
    from avlib.train import predicting, supervised_loss

    model = make_model()
    model.configure_training("finetune", lora)
    batch = model.collate(samples * 2)
    lengths = batch["attention_mask"].sum(1).tolist()
    parts = split_by_length(batch, 3)
    assert len(parts) == 3 and sum(len(p["video_features"]) for p in parts) == 6
    for part in parts:  # each cut to its own longest row, none of it padding for every row
        assert part["input_ids"].shape[1] == int(part["attention_mask"].sum(1).max()) and part["attention_mask"][:, -1].any()
    assert sorted(int(n) for p in parts for n in p["attention_mask"].sum(1)) == sorted(lengths)
    assert max(p["input_ids"].shape[1] for p in parts[:-1]) < max(lengths)  # the short rows are no longer padded to the longest
    trainable = [p for p in model.parameters() if p.requires_grad]
    count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def loss_and_grads(chunks):
        loss = sum(supervised_loss(model(c["input_ids"], c["attention_mask"], c["video_features"], c["audio_features"],
                                         logits_at=predicting(c["labels"])), c["labels"], predicting(c["labels"]), reduction="sum")
                   for c in chunks) / count
        return loss, torch.autograd.grad(loss, trainable)

    whole, whole_grads = loss_and_grads([batch])
    grouped, grouped_grads = loss_and_grads(parts)
    torch.testing.assert_close(grouped, whole)
    for a, b in zip(grouped_grads, whole_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.max_audio_windows = 1  # what truncation cut is counted once over the parts
    truncated = model.collate(samples * 2)
    assert truncated["dropped_audio_windows"] == 6
    assert sum(p["dropped_audio_windows"] for p in split_by_length(truncated, 3)) == 6
    assert split_by_length(batch, 1) == [batch]
    with pytest.raises(ValueError, match="groups must be at least 1"):
        split_by_length(batch, 0)


def test_training_in_length_groups_ends_where_whole_batches_do(tmp_path):
    whole, _ = helpers.run(tmp_path / "whole", steps=6, lora=helpers.LORA_NO_DROPOUT)
    grouped, _ = helpers.run(tmp_path / "grouped", steps=6, lora=helpers.LORA_NO_DROPOUT, length_groups=2)
    for name, value in trainable_state(whole).items():
        torch.testing.assert_close(trainable_state(grouped)[name], value, rtol=0, atol=1e-5, msg=name)


def test_gradient_checkpointing_trains_to_the_same_weights(tmp_path):
    plain, _ = helpers.run(tmp_path / "plain", steps=4, lora=helpers.LORA_NO_DROPOUT)
    checkpointed, _ = helpers.run(tmp_path / "checkpointed", steps=4, lora=helpers.LORA_NO_DROPOUT, gradient_checkpointing=True)
    assert checkpointed.llm.is_activation_checkpointing
    for name, value in trainable_state(plain).items():
        torch.testing.assert_close(trainable_state(checkpointed)[name], value, rtol=0, atol=1e-5, msg=name)


def test_batch_must_split_evenly(tmp_path):
    with pytest.raises(ValueError, match="must divide evenly"):
        train(helpers.make_model(), helpers.make_dataset(), "finetune", TrainingConfig(batch_size=5, grad_accum=2), tmp_path,
              lora=helpers.LORA, progress=False)


@pytest.mark.slow
def test_two_process_matches_one_process(tmp_path):
    one, _ = helpers.run(tmp_path / "one", steps=6, lora=helpers.LORA_NO_DROPOUT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG), str(HELPER), str(tmp_path / "two"), "6", "no-dropout"]
    subprocess.run(command, env=env, check=True, timeout=600)
    assert json.loads((tmp_path / "two" / CHECKPOINT / "progress.json").read_text())["processes"] == 2
    two = load_file(tmp_path / "two" / CHECKPOINT / "trainable.safetensors")
    for name, value in trainable_state(one).items():
        # Same global batch and loss; only the order of floating-point sums differs.
        torch.testing.assert_close(two[name], value, rtol=0, atol=1e-5, msg=name)


def test_the_projectors_can_learn_at_their_own_rate(make_model, samples, lora, tmp_path):
    model = make_model()
    cfg = TrainingConfig(steps=2, batch_size=3, lr=1e-2, projector_lr=1e-12, warmup=0, checkpoint_every=1)
    projectors = {n: p.detach().clone() for n, p in model.named_parameters() if "projector" in n}
    train(model, samples, "finetune", cfg, tmp_path / "run", lora=lora, progress=False)
    trained = dict(model.named_parameters())
    assert max((trained[n] - p).abs().max().item() for n, p in projectors.items()) < 1e-8, "projectors at lr 1e-12 barely move"
    lora_b = [p for n, p in trained.items() if "lora_B" in n]
    assert lora_b and max(p.abs().max().item() for p in lora_b) > 1e-4, "LoRA at lr 1e-2 moves"


def test_the_audio_projector_can_learn_at_its_own_rate(make_model, samples, lora, tmp_path):
    model = make_model()
    cfg = TrainingConfig(steps=2, batch_size=3, lr=1e-12, projector_lr=1e-12, audio_projector_lr=1e-2, warmup=0, checkpoint_every=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, samples, "finetune", cfg, tmp_path / "run", lora=lora, progress=False)
    moved = {n: (p - before[n]).abs().max().item() for n, p in model.named_parameters() if n in before}
    assert min(v for n, v in moved.items() if n.startswith("audio_projector.")) > 1e-4, "the audio projector at 1e-2 moves"
    assert max(v for n, v in moved.items() if n.startswith("vision_projector.")) < 1e-8, "the vision projector at 1e-12 barely does"


def _logged_losses(out: Path) -> list[tuple[str, str]]:
    rows = (out / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().split("\n")[1:]
    return [tuple(r.split("\t")[:2]) for r in rows if r]  # step, loss


def test_checkpoints_kept_elsewhere_resume_only_the_run_that_wrote_them(tmp_path, capsys):
    import dataclasses

    dataset = helpers.make_dataset()
    cfg = TrainingConfig(steps=6, batch_size=4, lr=5e-3, warmup=1, checkpoint_every=2)
    state = tmp_path / "kept"  # as the pipeline keeps them: outside the stage's outputs
    whole = train(helpers.make_model(), dataset, "finetune", cfg, tmp_path / "whole", lora=helpers.LORA, progress=False)
    train(helpers.make_model(), dataset, "finetune", cfg, tmp_path / "a", lora=helpers.LORA, progress=False,
          checkpoint_dir=state, stop_after=4)
    assert not (tmp_path / "a" / CHECKPOINT).exists() and (state / "progress.json").is_file()
    resumed = train(helpers.make_model(), dataset, "finetune", cfg, tmp_path / "b", lora=helpers.LORA, progress=False,
                    checkpoint_dir=state)  # the stage's output folder is new (DVC deleted it): the state is not
    assert "finetune: resuming from step 4" in capsys.readouterr().out
    assert resumed.final_loss == whole.final_loss
    assert len(_logged_losses(tmp_path / "whole")) >= 2
    assert _logged_losses(tmp_path / "b") == _logged_losses(tmp_path / "whole"), "the curve is whole, the steps before the kill too"
    again = train(helpers.make_model(), dataset, "finetune", cfg, tmp_path / "d", lora=helpers.LORA, progress=False,
                  checkpoint_dir=state)  # the stage reruns (its notebook changed, say); its training is complete
    assert "finetune: resuming from step 6" in capsys.readouterr().out
    assert again.final_loss == whole.final_loss and _logged_losses(tmp_path / "d") == _logged_losses(tmp_path / "whole")
    assert load_file(tmp_path / "d" / FINAL / "lora" / "adapter_model.safetensors").keys() and all(
        torch.equal(a, b) for a, b in zip(load_file(tmp_path / "d" / FINAL / "audio_projector.safetensors").values(),
                                          load_file(tmp_path / "whole" / FINAL / "audio_projector.safetensors").values()))
    other = dataclasses.replace(cfg, lr=1e-3)
    train(helpers.make_model(), dataset, "finetune", other, tmp_path / "c", lora=helpers.LORA, progress=False, checkpoint_dir=state)
    assert "was written by another run" in capsys.readouterr().out
    progress = json.loads((state / "progress.json").read_text())
    (state / "progress.json").write_text(json.dumps({k: v for k, v in progress.items() if k != "run"}))  # as older code wrote them
    train(helpers.make_model(), dataset, "finetune", other, tmp_path / "e", lora=helpers.LORA, progress=False, checkpoint_dir=state)
    assert "was written by another run" in capsys.readouterr().out, "a checkpoint that names no run is not resumed"


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    dataset = helpers.make_dataset()
    cfg = TrainingConfig(steps=6, batch_size=4, lr=5e-3, warmup=1, checkpoint_every=2)
    whole = train(helpers.make_model(), dataset, "finetune", cfg, tmp_path / "whole", lora=helpers.LORA, progress=False)
    run = tmp_path / "run"
    train(helpers.make_model(), dataset, "finetune", cfg, run, lora=helpers.LORA, progress=False, stop_after=4)
    latest, before = run / CHECKPOINT, run / f"{CHECKPOINT}.previous"
    assert json.loads((before / "progress.json").read_text())["step"] == 2
    weights = latest / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a full disk
    resumed = train(helpers.make_model(), dataset, "finetune", cfg, run, lora=helpers.LORA, progress=False)
    out = capsys.readouterr().out
    assert f"{latest}: the checkpoint is damaged" in out and f"resuming from step 2 ({before})" in out
    assert resumed.final_loss == whole.final_loss, "resumed from the earlier checkpoint, the run ends as an uninterrupted one"


def test_a_bit_flip_in_a_checkpoint_is_caught_by_its_digest(tmp_path, capsys):
    dataset = helpers.make_dataset()
    cfg = TrainingConfig(steps=6, batch_size=4, lr=5e-3, warmup=1, checkpoint_every=2)
    run = tmp_path / "run"
    train(helpers.make_model(), dataset, "finetune", cfg, run, lora=helpers.LORA, progress=False, stop_after=4)
    state = run / CHECKPOINT / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01  # loads without complaint: only the digest can tell
    state.write_bytes(bytes(data))
    train(helpers.make_model(), dataset, "finetune", cfg, run, lora=helpers.LORA, progress=False, stop_after=4)
    out = capsys.readouterr().out
    assert "state.pt: damaged" in out and "resuming from step 2" in out


def test_when_every_checkpoint_is_damaged_the_error_names_them_and_the_fix(tmp_path):
    dataset = helpers.make_dataset()
    cfg = TrainingConfig(steps=6, batch_size=4, lr=5e-3, warmup=1, checkpoint_every=2)
    run = tmp_path / "run"
    train(helpers.make_model(), dataset, "finetune", cfg, run, lora=helpers.LORA, progress=False, stop_after=4)
    for folder in (run / CHECKPOINT, run / f"{CHECKPOINT}.previous"):
        weights = folder / "trainable.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"every checkpoint kept in .* is damaged .*delete them to start the stage afresh"):
        train(helpers.make_model(), dataset, "finetune", cfg, run, lora=helpers.LORA, progress=False)
