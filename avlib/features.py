"""The feature cache: every clip through the frozen encoders once.

The encoders never train, so their pooled features are computed once per clip
and stored as safetensors shards with a JSON-lines index. The cache lives in a
folder named by a key that hashes everything the features depend on: both
encoders' weights and every preprocessing parameter (frames, frame size, audio
window, pooled counts, feature layer, mel bins). Change any of them and the key
changes: stale features can never be read. Each entry also records its media
file's size and sha256, checked when the cache is opened.

Extraction shows progress, resumes where an interrupted run stopped (a shard is
renamed into place before its index lines are written; a last index line torn
by a crash is ignored, reported and cut off before the next append), and splits
across processes with accelerate, each rank writing its own shards and index
file. Writers never share a temporary name, a writer holds its rank's lock
while it writes (a second extraction into the same folder waits, then finds
the work done), and the index is checked again before each batch, so no media
is encoded twice:

    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m avlib.stages extract --data data --out features
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from avlib.datasets import CORPUS_SPLITS, Example, find_video, load_media, read_corpus_split
from avlib.integrity import DamagedFile, file_sha256
from avlib.progress import progress_bar

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """Everything the cached features depend on."""

    audio_encoder: str  # sha256 of the audio encoder's weights
    vision_encoder: str  # sha256 of the vision encoder's weights
    num_frames: int
    frame_size: int
    window_seconds: float
    num_audio_tokens: int
    n_mels: int
    feature_layer: int
    sample_rate: int = 16000
    compute_dtype: str = "float32"  # what the encoders computed in: bfloat16 on a GPU gives other features
    version: int = FORMAT_VERSION

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def spec_for(model, num_frames: int, frame_size: int, feature_layer: int, compute_dtype: str = "float32") -> FeatureSpec:
    audio = model.audio_encoder
    return FeatureSpec(
        compute_dtype=compute_dtype,
        audio_encoder=module_digest(audio),
        vision_encoder=module_digest(model.vision_encoder),
        num_frames=num_frames,
        frame_size=frame_size,
        window_seconds=audio.window_seconds,
        num_audio_tokens=audio.num_audio_tokens,
        n_mels=audio.n_mels,
        feature_layer=feature_layer,
    )


class StaleFeatures(RuntimeError):
    """A media file changed after its features were cached."""


class FeatureCache:
    """One key's folder: spec.json, shard-RR-NNNNN.safetensors files and index-RR.jsonl files."""

    def __init__(self, root: str | Path, spec: FeatureSpec, data_root: str | Path):
        self.spec = spec
        self.folder = Path(root) / spec.key
        self.data_root = Path(data_root)
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_file = self.folder / "spec.json"
        if not spec_file.exists():
            _write_atomically(spec_file, json.dumps(asdict(spec), indent=1) + "\n")
        self._handles: dict[str, object] = {}
        self._entries: dict[str, dict] = {}
        self._read_up_to: dict[str, int] = {}  # index file -> bytes of complete lines already parsed

    def entries(self) -> dict[str, dict]:
        """media (relative to the data root) -> its index entry, merged over every rank's index.

        Reads only what was appended since the last call. A last line without
        its newline (a writer mid-append, or one killed there) is not read.
        """
        for index in sorted(self.folder.glob("index-*.jsonl")):
            done = self._read_up_to.get(index.name, 0)
            with index.open("rb") as handle:
                handle.seek(done)
                new = handle.read()
            complete = new[: new.rfind(b"\n") + 1]
            for number, line in enumerate(complete.decode().splitlines()):
                if line.strip():
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{index}: line {number + 1} after byte {done} is not an index entry ({err}); "
                                         f"delete {self.folder} and extract again") from None
                    self._entries[entry["media"]] = entry
            self._read_up_to[index.name] = done + len(complete)
        return dict(self._entries)

    def relative(self, media: Path) -> str:
        return Path(media).resolve().relative_to(self.data_root.resolve()).as_posix()

    def verify(self, entries: dict[str, dict] | None = None) -> None:
        """Raise StaleFeatures if any cached media file changed (size or content) since extraction."""
        for media, entry in (entries or self.entries()).items():
            path = self.data_root / media
            if not path.is_file() or path.stat().st_size != entry["size"] or file_sha256(path) != entry["sha256"]:
                raise StaleFeatures(f"{path} changed after its features were cached in {self.folder}; delete that folder and extract again")

    def load(self, entry: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(video features or None, audio features or None) of one index entry."""
        shard = entry["shard"]
        if shard not in self._handles:
            path = self.folder / shard
            if "shard_sha256" in entry and file_sha256(path) != entry["shard_sha256"]:
                raise DamagedFile(f"{path}: damaged (its sha256 is not the one recorded when it was written); rebuild the "
                                  "cache with `dvc repro -f encoders`, or `dvc checkout features`")
            self._handles[shard] = safe_open(path, framework="pt")
        handle = self._handles[shard]
        video = handle.get_tensor(entry["video"]) if entry["video"] else None
        audio = handle.get_tensor(entry["audio"]) if entry["audio"] else None
        return video, audio

    def writer(self, rank: int) -> _RankLock:
        """The lock a process holds while it writes rank `rank`'s shards and index: `with cache.writer(rank): ...`."""
        return _RankLock(self.folder / f"rank-{rank:02d}.lock", self.folder / f"index-{rank:02d}.jsonl")

    def _next_shard(self, rank: int) -> int:
        numbers = [int(p.stem.split("-")[2]) for p in self.folder.glob(f"shard-{rank:02d}-*.safetensors")]
        return max(numbers, default=-1) + 1

    def write(self, rank: int, items: Sequence[tuple[Path, torch.Tensor | None, torch.Tensor | None]]) -> None:
        """Write one shard atomically, then its index lines. Call it holding `writer(rank)`."""
        name = f"shard-{rank:02d}-{self._next_shard(rank):05d}.safetensors"
        tensors, lines = {}, []
        for i, (media, video, audio) in enumerate(items):
            entry = {"media": self.relative(media), "shard": name, "video": None, "audio": None,
                     "size": media.stat().st_size, "sha256": file_sha256(media)}
            if video is not None:
                entry["video"] = f"{i}.video"
                tensors[entry["video"]] = video.detach().cpu().float().contiguous()
            if audio is not None:
                entry["audio"] = f"{i}.audio"
                entry["audio_windows"] = audio.shape[0] // self.spec.num_audio_tokens
                tensors[entry["audio"]] = audio.detach().cpu().float().contiguous()
            lines.append(json.dumps(entry))
        tmp = self.folder / f".{name}.{uuid.uuid4().hex}.tmp"
        save_file(tensors, tmp)
        shard_sha256 = file_sha256(tmp)
        lines = [json.dumps({**json.loads(line), "shard_sha256": shard_sha256}) for line in lines]
        os.replace(tmp, self.folder / name)
        with (self.folder / f"index-{rank:02d}.jsonl").open("a") as index:
            index.write("\n".join(lines) + "\n")
            index.flush()
            os.fsync(index.fileno())

    def summary(self) -> dict:
        entries = self.entries()
        with_audio = [e for e in entries.values() if e["audio"]]
        return {
            "key": self.spec.key,
            "items": len(entries),
            "with_video": sum(bool(e["video"]) for e in entries.values()),
            "with_audio": len(with_audio),
            "without_audio": len(entries) - len(with_audio),
            "multi_window_audio": sum(e.get("audio_windows", 0) > 1 for e in with_audio),
            "shards": len(list(self.folder.glob("shard-*.safetensors"))),
            "bytes": sum(p.stat().st_size for p in self.folder.glob("shard-*.safetensors")),
        }


def extract(
    model,
    media: Sequence[Path],
    cache: FeatureCache,
    batch_size: int = 32,
    shard_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> int:
    """Encode the media files not yet cached (this rank's share); returns how many were encoded.

    Holds this rank's writer lock throughout; before each batch, drops what
    another writer has indexed in the meantime.
    """
    with cache.writer(rank):
        return _extract(model, media, cache, batch_size, shard_size, rank, world_size, progress)


def _extract(model, media, cache, batch_size, shard_size, rank, world_size, progress) -> int:
    done = set(cache.entries())
    todo = sorted({Path(m) for m in media if cache.relative(m) not in done}, key=str)[rank::world_size]
    device = next(model.parameters()).device
    pending, encoded = [], 0
    bar = progress_bar(total=len(todo), show=progress, desc=f"features (rank {rank})")
    for start in range(0, len(todo), batch_size):
        done = set(cache.entries())
        chunk = [path for path in todo[start : start + batch_size] if cache.relative(path) not in done]
        bar.update(min(batch_size, len(todo) - start) - len(chunk))
        if not chunk:
            continue
        loaded = [load_media(path, cache.spec.num_frames, cache.spec.frame_size, cache.spec.sample_rate) for path in chunk]
        videos = [None if frames is None else torch.from_numpy(frames).to(device) for frames, _ in loaded]
        audios = [None if audio is None else torch.from_numpy(audio).to(device) for _, audio in loaded]
        video_features, audio_features = model.encode_media(videos, audios)
        pending += list(zip(chunk, video_features, audio_features))
        encoded += len(chunk)
        bar.update(len(chunk))
        while len(pending) >= shard_size:
            cache.write(rank, pending[:shard_size])
            pending = pending[shard_size:]
    if pending:
        cache.write(rank, pending)
    bar.close()
    return encoded


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary name no other process uses, then rename into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _RankLock:
    """An exclusive lock on one rank's shards and index, held across processes (flock).

    On entry it also cuts off a torn last index line (a writer killed
    mid-append) so the next append starts on a line of its own; it says so.
    """

    def __init__(self, lock_path: Path, index: Path):
        self.lock_path, self.index, self._handle = lock_path, index, None

    def __enter__(self) -> _RankLock:
        self._handle = self.lock_path.open("a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        if self.index.is_file():
            data = self.index.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                warnings.warn(f"{self.index}: ignoring a torn last line of {len(data) - keep} bytes "
                              "(an extraction was interrupted mid-write); its media will be encoded again", stacklevel=3)
                with self.index.open("r+b") as handle:
                    handle.truncate(keep)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


class FeatureDataset(Dataset):
    """Examples with their cached features: dicts of id, question, answer, needs, video_features, audio_features."""

    def __init__(self, examples: Sequence[Example], cache: FeatureCache, verify: bool = True):
        self.examples = list(examples)
        self.cache = cache
        entries = cache.entries()
        self.entries = []
        missing = []
        for example in self.examples:
            entry = entries.get(cache.relative(example.media))
            if entry is None:
                missing.append(str(example.media))
            self.entries.append(entry)
        if missing:
            raise KeyError(f"{len(missing)} media files have no cached features in {cache.folder} (first: {missing[0]}); run the extraction")
        if verify:
            cache.verify({e["media"]: e for e in self.entries})

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        video, audio = self.cache.load(self.entries[index])
        return {"id": example.id, "question": example.question, "answer": example.answer, "needs": example.needs,
                "video_features": video, "audio_features": audio}


def corpus_media(data_root: str | Path) -> list[Path]:
    """Every media file the study reads: those its splits and benchmarks name (synthetic or prepared)."""
    root = Path(data_root)
    media = {e.media for name in CORPUS_SPLITS if (root / "splits" / f"{name}.json").is_file()
             for e in read_corpus_split(root, name)}
    for bench in sorted((root / "benchmarks").rglob("*.json")):
        if bench.name == "videos.json":
            continue
        media |= {find_video(root / "clips", r["video_name"]) for r in json.loads(bench.read_text()) if "video_name" in r}
    return sorted(media)
