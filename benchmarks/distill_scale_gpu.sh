#!/bin/bash
# The GPU rows of docs/benchmarks.md (issue 11), as run on one H200 (random weights, so no
# download): part 1 = the targets' case (vocab 128,256, 4k tokens, tiny body, all four
# variants) and the real Llama 3.2 3B / Llama 3.1 8B bodies, full and LoRA, at 4k tokens;
# part 2 = the longer / larger-vocabulary tiny-body cases and the 3B body's naive and TRL rows;
# part 3 (not run yet) = the time gap's likeliest cause: the loss's lm_head chunks run in
# float32 with autocast off; TF32 (train.tf32) and larger chunks (loss.logit_chunk_size) at
# the 3B body, 4k + 4k tokens, with naive beside them. Compare time per trained token and,
# as the accuracy check, each row's raw step losses (loss_sft, loss_kl) with the tf32-off row;
# part 4 = the same case under torch.profiler, raft_distill and naive (ops by GPU self time).
# GPU peak is torch.cuda.max_memory_allocated; the host-RSS cap only guards the machine.
#   OUT=results TOK=smollm2-135m-instruct bash benchmarks/distill_scale_gpu.sh 1
set -u
OUT=${OUT:-benchmarks/gpu}
TOK=${TOK:-smollm2-135m-instruct}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
B=(python3 benchmarks/distill_scale.py --tokenizer "$TOK" --models /tmp --cap-gb 120)
if [ "${1:-1}" = 1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
  python3 -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)" >> "$OUT/gpu.txt"
  "${B[@]}" --out "$OUT/tiny.jsonl" --cases 128256:1:4096
  "${B[@]}" --out "$OUT/llama3-3b.jsonl" --body llama3-3b --cases 128256:1:4096 --variants raft_distill,raft_distill_lora
  "${B[@]}" --out "$OUT/llama3-8b.jsonl" --body llama3-8b --cases 128256:1:4096 --variants raft_distill_lora,raft_distill
elif [ "$1" = 2 ]; then
  "${B[@]}" --out "$OUT/tiny.jsonl" --cases 128256:1:8192,151936:1:4096,128256:1:1024
  "${B[@]}" --out "$OUT/llama3-3b.jsonl" --body llama3-3b --cases 128256:1:4096 --variants naive,trl
elif [ "$1" = 4 ]; then
  # the op-level split of the same case (torch.profiler; its timings are not the table's)
  "${B[@]}" --out "$OUT/head_profile.jsonl" --body llama3-3b --cases 128256:1:4096 \
    --variants raft_distill,naive --profile "$OUT/profile"
else
  H=("${B[@]}" --out "$OUT/head.jsonl" --body llama3-3b --cases 128256:1:4096 --steps 2)
  "${H[@]}" --variants naive,raft_distill --tf32 off
  "${H[@]}" --variants raft_distill --tf32 on
  "${H[@]}" --variants raft_distill --tf32 on --logit-chunk 512
  "${H[@]}" --variants raft_distill --tf32 off --logit-chunk 512
  "${H[@]}" --variants raft_distill --tf32 on --logit-chunk 2048
fi
