"""Benchmark: an epoch of joint finetuning from the feature cache vs from raw media.

Needs stage 1's outputs (checkpoints/foundation, features/) and the corpus in data/.
Both paths run the same training steps on the same batches; the raw path decodes each
clip and runs the frozen encoders inside the step, as training without a cache must.

    python benchmarks/cache_epoch.py [--limit N]     (N examples instead of the whole epoch)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from avlib.config import load_params
from avlib.datasets import MediaDataset, collate_media
from avlib.features import FeatureDataset
from avlib.runtime import configure
from avlib.stages import load_trained_model, open_cache, stage_examples
from avlib.train import batch_indices
from study_paths import study_parser


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--limit", type=int, default=None, help="examples to train on (default: one whole epoch)")
    args = parser.parse_args()
    params = load_params(args.params)
    configure(params.runtime)
    model = load_trained_model(params, args.foundation, [])
    model.configure_training("finetune", params.finetune.lora)
    cache = open_cache(params, model, args.data, args.features)
    examples = stage_examples(args.data, "finetune")
    cached = FeatureDataset(examples, cache)
    size = model.vision_encoder.image_size[0]  # the SigLIP input size, tiny or paper
    raw = MediaDataset(examples, params.model.vision.num_frames, size)
    batch_size = params.finetune.batch_size
    steps = -(-(args.limit or len(examples)) // batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def epoch(from_cache: bool) -> float:
        model.train()
        start = time.perf_counter()
        for step in range(steps):
            indices = batch_indices(len(examples), batch_size, step, params.seed)
            if from_cache:
                batch = model.collate([cached[i] for i in indices])
            else:
                batch = collate_media([raw[i] for i in indices], model)
            loss = model(batch["input_ids"], batch["attention_mask"], batch["video_features"], batch["audio_features"],
                         labels=batch["labels"]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    print(f"{steps} steps of batch {batch_size} ({steps * batch_size} of {len(examples)} examples), {torch.get_num_threads()} threads")
    from_cache = epoch(True)
    from_raw = epoch(False)
    print(f"from the feature cache: {from_cache:.1f} s")
    print(f"from raw media:         {from_raw:.1f} s")
    print(f"speedup: {from_raw / from_cache:.1f}x")


if __name__ == "__main__":
    main()
