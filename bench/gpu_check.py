"""The device check: what of the GPU path runs on this machine, and its figures (a few minutes).

    .venv/bin/python bench/gpu_check.py [--json OUT] [--frames 64]

Prints, for each part of the GPU path, whether it is available and what it measures:

* the privacy detectors on onnxruntime's CUDA execution provider (needs ``onnxruntime-gpu``):
  milliseconds per 640-px frame on CUDA and on the CPU, batched as the job batches them, and
  whether the boxes agree within a pixel;
* GPU video decoding (NVDEC through ``torchcodec``'s CUDA decoder or ``PyNvVideoCodec``): decoded
  frames per second of the shared real road video against PyAV on the CPU;
* the loader's torch path: a batch copied from pinned host memory to the GPU with a non-blocking
  copy, GB/s.

Every part that is not available says why and is skipped; the script never fails for a missing GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

VIDEO = REPO.parent / "shared" / "data" / "real" / "video" / "udacity_lanelines_solidWhiteRight.mp4"


def _frames(n: int) -> list[np.ndarray]:
    import av
    import cv2

    out = []
    with av.open(str(VIDEO)) as c:
        for f in c.decode(video=0):
            out.append(cv2.resize(f.to_ndarray(format="rgb24"), (640, 360), interpolation=cv2.INTER_AREA))
            if len(out) >= n:
                break
    return out


def privacy(n: int) -> dict[str, Any]:
    import onnxruntime as ort

    from fleetcore.stages.privacy import PrivacyStage

    have = ort.get_available_providers()
    if "CUDAExecutionProvider" not in have:
        return {"available": False, "why": f"onnxruntime offers {have} (install onnxruntime-gpu for CUDA)"}
    frames = _frames(n)
    out: dict[str, Any] = {"available": True, "frames": len(frames)}
    boxes = {}
    for device in ("cpu", "cuda"):
        st = PrivacyStage(device=device)
        st.detect_many(frames[:8])  # warm-up
        t = time.perf_counter()
        boxes[device] = st.detect_many(frames)
        out[f"ms_per_frame_{device}"] = round(1000 * (time.perf_counter() - t) / len(frames), 2)
    same = all(len(a) == len(b) and all(ka == kb and max(abs(x - y) for x, y in zip(ba, bb)) <= 1 for (ka, ba), (kb, bb) in zip(a, b))
               for a, b in zip(boxes["cpu"], boxes["cuda"]))
    out["boxes_agree_within_1px"] = same
    return out


def nvdec() -> dict[str, Any]:
    try:
        import torch
        from torchcodec.decoders import VideoDecoder  # type: ignore[import-not-found]
    except ImportError as exc:
        return {"available": False, "why": f"torchcodec with CUDA not installed ({exc.name})"}
    if not torch.cuda.is_available():
        return {"available": False, "why": "torch sees no CUDA device"}
    import av

    t = time.perf_counter()
    with av.open(str(VIDEO)) as c:
        n_cpu = sum(1 for _ in c.decode(video=0))
    cpu_fps = n_cpu / (time.perf_counter() - t)
    dec = VideoDecoder(str(VIDEO), device="cuda")
    t = time.perf_counter()
    n = 0
    for i in range(len(dec)):
        _ = dec[i]
        n += 1
    torch.cuda.synchronize()
    return {"available": True, "frames": n, "fps_gpu": round(n / (time.perf_counter() - t), 1), "fps_cpu_pyav": round(cpu_fps, 1)}


def pinned_copy() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"available": False, "why": "torch not installed (pip install -e '.[train]')"}
    if not torch.cuda.is_available():
        return {"available": False, "why": "torch sees no CUDA device"}
    batch = torch.empty((64, 3, 360, 640), dtype=torch.uint8).pin_memory()
    dev = torch.empty_like(batch, device="cuda")
    dev.copy_(batch, non_blocking=True)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        dev.copy_(batch, non_blocking=True)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {"available": True, "gb_per_s": round(20 * batch.numel() / dt / 1e9, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=64)
    args = ap.parse_args(argv)
    doc = {"privacy_cuda": privacy(args.frames), "nvdec": nvdec(), "loader_pinned_copy": pinned_copy()}
    for name, r in doc.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
