"""Artifact store: what the S3 protocol costs against the local filesystem, side by side.

Usage: .venv/bin/python bench/artifact_store.py [--repeats 5] [--image-repeats 30]
       [--training-images 11600]

One run starts moto's S3 server (tests/s3_server.py: a subprocess on 127.0.0.1, IAM
authentication on) and uses, side by side, a bucket there and a local folder store:

(a) `fetch_tree` of a LoRA-sized and of a reference-sized folder into an empty folder: with an
    empty host cache (miss: download, verify, place), with a warm cache (hit: copy from the
    cache), and again into the same folder (nothing to do). A plain `shutil.copytree` of the
    folder is the yardstick: what reading it from a shared disk would cost at best.
(b) Upload overhead: `publish_tree` of a checkpoint-sized folder, and `put_file` of one 512 px
    PNG, against writing the same bytes to the local filesystem.

Sizes (random bytes: speed does not depend on content):
- LoRA: rank-16 fp32 adapter on SD v1.5's cross-attention projections (the default targets),
  its parameter count computed from fairskin/diffusion/configs/sd15/unet/config.json.
- Checkpoint: `trainable.safetensors` (the adapter) + `state.pt` (AdamW's two moments per
  parameter, fp32, plus 64 KiB of scheduler and RNG state) + `identity.json`.
- Reference: the files `Reference.save` writes, at production shapes: 6 skin types, Inception
  Gaussians at 2048 dims (mean + M2 upper triangle, float64), KID samples of 500 x 2048
  float32, 10 LPIPS images per skin type at 512 px (uint8), CLIP ViT-B-32 embeddings (512
  float32) of the training images.
- Image: a 512 px procedural lesion (fairskin.imaging.demo) encoded as the app stores it.

moto on localhost measures the protocol and client cost (HTTP, signing, checksums, moto's
in-memory store), not network bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairskin.store.cache import HostCache
from fairskin.store.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from fairskin.store.trees import fetch_tree, publish_tree
from tests.s3_server import start_moto_server

ROOT = Path(__file__).resolve().parents[1]
UNET_CONFIG = ROOT / "fairskin/diffusion/configs/sd15/unet/config.json"
LORA_RANK = 16
FSTS = range(1, 7)
MB = 1_000_000


def lora_parameters(rank: int = LORA_RANK) -> int:
    """LoRA parameters on every attn2 to_q/to_k/to_v/to_out.0 of the SD v1.5 UNet.

    Per transformer block of width C: to_q C->C, to_k and to_v X->C (X the text width),
    to_out C->C; a rank-r adapter of an in->out layer has r * (in + out) parameters.
    """
    config = json.loads(UNET_CONFIG.read_text())
    widths = config["block_out_channels"]
    text = config["cross_attention_dim"]
    layers = config["layers_per_block"]
    blocks: list[int] = []
    for width, kind in zip(widths, config["down_block_types"], strict=True):
        blocks += [width] * layers if kind.startswith("CrossAttn") else []
    blocks.append(widths[-1])  # the mid block
    for width, kind in zip(reversed(widths), config["up_block_types"], strict=True):
        blocks += [width] * (layers + 1) if kind.startswith("CrossAttn") else []
    return sum(rank * (2 * c + (text + c) + (text + c) + 2 * c) for c in blocks)


def write_lora(folder: Path, rng: np.random.Generator) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    weights = rng.standard_normal(lora_parameters(), dtype=np.float32)
    save_file({"lora": weights}, str(folder / "pytorch_lora_weights.safetensors"))
    (folder / "config.json").write_text(json.dumps({"rank": LORA_RANK, "alpha": 32}))


def checkpoint_files() -> dict[str, bytes]:
    n = lora_parameters()
    header = json.dumps({"lora": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    trainable = len(header).to_bytes(8, "little") + header.encode() + os.urandom(4 * n)
    return {
        "trainable.safetensors": trainable,
        "state.pt": os.urandom(2 * 4 * n + (64 << 10)),
        "identity.json": b'{"run": "bench", "sha256": "' + b"0" * 64 + b'"}',
    }


def write_reference(folder: Path, rng: np.random.Generator, training_images: int) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    dim, upper = 2048, 2048 * 2049 // 2
    arrays: dict[str, np.ndarray] = {}
    for fst in FSTS:
        arrays[f"gaussian_{fst}_mean"] = rng.standard_normal(dim)
        arrays[f"gaussian_{fst}_m2_upper"] = rng.standard_normal(upper)
        arrays[f"inception_sample_{fst}"] = rng.standard_normal((500, dim), dtype=np.float32)
        arrays[f"real_vs_real_lpips_real_{fst}"] = rng.standard_normal(45)
        arrays[f"real_vs_real_fid_{fst}"] = rng.standard_normal(20)
    arrays["training_embeddings"] = rng.standard_normal((training_images, 512), dtype=np.float32)
    arrays["real_vs_real_memorization_0"] = rng.standard_normal(training_images)
    np.savez(folder / "arrays.npz", **arrays)  # type: ignore[arg-type]
    images = {f"fst_{fst}": rng.integers(0, 256, (10, 3, 512, 512), dtype=np.uint8) for fst in FSTS}
    save_file(images, str(folder / "lpips_images.safetensors"))
    (folder / "reference.json").write_text(json.dumps({"format": 1, "size": 512}))
    (folder / "identity.json").write_text(json.dumps({"batch": "bench"}))


def lesion_png() -> bytes:
    from fairskin.imaging.demo import draw_lesion
    from fairskin.imaging.encode import encode_for_storage

    return encode_for_storage(draw_lesion("MEL", 4, seed=7, size=512)).png


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(work: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


def summary(samples: list[float]) -> dict[str, float]:
    """Median and fastest, in ms."""
    return {"median": statistics.median(samples) * 1000, "min": min(samples) * 1000}


def fetch_costs(store: ObjectStore, source: Path, key: str, scratch: Path, repeats: int) -> dict:
    publish_tree(store, source, key)
    miss, hit, again, plain = [], [], [], []
    for rep in range(repeats):
        cache = HostCache(scratch / f"cache-{rep}", max_bytes=0)
        first, second = scratch / f"miss-{rep}", scratch / f"hit-{rep}"
        miss.append(timed(fetch_tree, store, key, first, cache))
        hit.append(timed(fetch_tree, store, key, second, cache))
        again.append(timed(fetch_tree, store, key, second, cache))
        plain.append(timed(shutil.copytree, source, scratch / f"plain-{rep}"))
        for folder in (cache.root, first, second, scratch / f"plain-{rep}"):
            shutil.rmtree(folder)
    return {
        "miss": summary(miss),
        "hit": summary(hit),
        "in_place": summary(again),
        "copytree": summary(plain),
    }


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def upload_costs(stores: dict[str, ObjectStore], scratch: Path, args: argparse.Namespace) -> dict:
    """Each repetition times every variant once, in turn, so background load hits all alike."""
    files = checkpoint_files()
    png = lesion_png()
    local = stores["local folder store"]
    assert local.local_root is not None
    in_place = local.local_root / "ck-in-place"
    write_folder(in_place, files)
    checkpoint: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        folder = scratch / f"ckpt-{rep}"
        checkpoint.setdefault("write to local filesystem", []).append(
            timed(write_folder, folder, files)
        )
        for name, store in stores.items():
            checkpoint.setdefault(f"publish_tree to {name}", []).append(
                timed(publish_tree, store, folder, f"ck/{rep}")
            )
        checkpoint.setdefault(
            "publish_tree, local store, folder already in it (hash only)", []
        ).append(timed(publish_tree, local, in_place, "ck-in-place"))

    image = scratch / "image.png"
    image.write_bytes(png)
    images: dict[str, list[float]] = {}
    for i in range(args.image_repeats):
        images.setdefault("write to local filesystem", []).append(
            timed(Path.write_bytes, scratch / f"img-{i}.png", png)
        )
        for name, store in stores.items():
            images.setdefault(f"put_file to {name}", []).append(
                timed(store.put_file, f"images/{i}.png", image)
            )
    return {
        "checkpoint_bytes": sum(map(len, files.values())),
        "png_bytes": len(png),
        "checkpoint": {name: summary(samples) for name, samples in checkpoint.items()},
        "png": {name: summary(samples) for name, samples in images.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-repeats", type=int, default=30)
    parser.add_argument("--training-images", type=int, default=11600)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        scratch = Path(tmp)
        server = start_moto_server(scratch)
        try:
            stores: dict[str, ObjectStore] = {
                "local folder store": LocalObjectStore(scratch / "local-store"),
                "S3 (moto, localhost)": S3ObjectStore(
                    server.bucket,
                    endpoint_url=server.endpoint_url,
                    access_key=server.access_key,
                    secret_key=server.secret_key,
                    region=server.region,
                ),
            }
            rng = np.random.default_rng(0)
            write_lora(scratch / "src" / "lora", rng)
            write_reference(scratch / "src" / "reference", rng, args.training_images)
            report: dict = {
                "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python "
                f"{platform.python_version()}",
                "lora_parameters": lora_parameters(),
                "sizes": {
                    name: folder_size(scratch / "src" / name) for name in ("lora", "reference")
                },
                "fetch": {},
            }
            for store_name, store in stores.items():
                for artifact in ("lora", "reference"):
                    work = scratch / "work"
                    work.mkdir()
                    report["fetch"][f"{artifact} / {store_name}"] = fetch_costs(
                        store, scratch / "src" / artifact, f"bench/{artifact}", work, args.repeats
                    )
                    shutil.rmtree(work)
            report["upload"] = upload_costs(stores, scratch, args)
        finally:
            server.stop()
    print_report(report, args)


def print_report(report: dict, args: argparse.Namespace) -> None:
    print(json.dumps(report, indent=1))
    sizes = report["sizes"]
    print(f"\nLoRA: {report['lora_parameters']:,} parameters, {sizes['lora'] / MB:.2f} MB; ")
    print(f"reference: {sizes['reference'] / MB:.1f} MB ({args.training_images} training images)")
    print("\n| fetch_tree, median (min) ms | miss | hit | already in place | plain copytree |")
    print("|---|---|---|---|---|")
    for name, row in report["fetch"].items():
        cells = " | ".join(
            f"{row[c]['median']:.1f} ({row[c]['min']:.1f})"
            for c in ("miss", "hit", "in_place", "copytree")
        )
        print(f"| {name} | {cells} |")
    upload = report["upload"]
    for what, label in (("checkpoint", "checkpoint"), ("png", "512 px PNG")):
        size = upload[f"{what}_bytes"] / MB
        base = upload[what]["write to local filesystem"]["median"]
        print(f"\n| {label} ({size:.2f} MB) | median ms | min ms | median / local write |")
        print("|---|---|---|---|")
        for name, ms in upload[what].items():
            print(f"| {name} | {ms['median']:.2f} | {ms['min']:.2f} | {ms['median'] / base:.1f} |")


if __name__ == "__main__":
    main()
