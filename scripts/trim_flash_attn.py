"""Trims a copy of the candle-flash-attn crate to the kernels synpref's CUDA path uses.

    python3 scripts/trim_flash_attn.py CRATE_COPY

candle-flash-attn compiles 53 CUDA files (every head size, fp16 and bf16, split-KV and
paged variants): one or two hours on this 2-core machine with nvcc for sm_90. synpref's
packed CUDA path (operators/src/models/decoder/flash.rs) runs bf16 only, with head sizes
up to 128 (every decoder it supports: Qwen3 0.6B-8B and Llama 3 have head size 128), so
the copy keeps the causal and the non-causal bf16 head-size-128 kernels (the non-causal
one serves sliding windows) and routes every head size up to 128 to them: the kernels
mask the columns past the real head size (FlashAttention's own dispatch picks the
smallest kernel at least as large, so a 128 kernel on a 64 head is one of its cases).
Anything else (fp16, head sizes over 128, a paged KV cache) aborts with a message;
flash.rs never asks for them. Nothing of the crate is committed: build-cuda.sh copies it
from cargo's registry and runs this on the copy.
"""

import re
import sys
from pathlib import Path

KEPT = [
    "kernels/flash_api.cu",
    "kernels/flash_fwd_hdim128_bf16_sm80.cu",
    "kernels/flash_fwd_hdim128_bf16_causal_sm80.cu",
]

DISPATCH = """void run_mha_fwd(Flash_fwd_params &params, cudaStream_t stream) {
  // synpref's trimmed build (scripts/trim_flash_attn.py): bf16, head size <= 128.
  if (!params.is_bf16 || params.d > 128 || params.block_table != nullptr) {
    fprintf(stderr, "synpref's flash-attention build has bf16 kernels of head size <= 128 "
                    "only (got bf16=%d, d=%d, paged=%d)\\n",
            (int)params.is_bf16, (int)params.d, (int)(params.block_table != nullptr));
    abort();
  }
  using elem_type = cutlass::bfloat16_t;
  BOOL_SWITCH(params.is_causal, Is_causal, [&] {
      run_mha_fwd_<elem_type, 128, Is_causal>(params, stream);
  });
}

"""


def main(crate: Path) -> None:
    build = crate / "build.rs"
    text = build.read_text()
    kept = ", ".join(f'"{k}"' for k in KEPT)
    text, n = re.subn(
        r"const KERNEL_FILES: \[&str; \d+\] = \[.*?\];",
        f"const KERNEL_FILES: [&str; {len(KEPT)}] = [{kept}];",
        text,
        flags=re.S,
    )
    if n != 1:
        sys.exit(f"{build}: no KERNEL_FILES list to trim (a new candle-flash-attn?)")
    build.write_text(text)

    api = crate / "kernels" / "flash_api.cu"
    text = api.read_text()
    start = text.find("void run_mha_fwd(")
    end = text.find('extern "C" void run_mha(')
    if start < 0 or end < start:
        sys.exit(f"{api}: no run_mha_fwd dispatch to trim (a new candle-flash-attn?)")
    text = "#include <cstdio>\n#include <cstdlib>\n" + text[:start] + DISPATCH + text[end:]
    api.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
