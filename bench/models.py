"""Model benchmarks: the LLM and image engines in-process vs behind their gRPC services.

Run with ``python bench/models.py`` (``make bench`` once the Makefile calls it). Both sides use
the same weights, prompt, settings and thread count, measured in one run and interleaved
(service, in-process, service, ...) so drift on the machine hits both alike. Prints:

* LLM: tokens/s of Gemma 3 270M (llama-cpp backend) over gRPC vs llama-cpp-python called
  in-process on the identical prompt; ratio service/in-process, target >= 0.97.
* Image: seconds per denoising step of the tiny Stable Diffusion through the service vs the
  diffusers pipeline in-process; ratio service/in-process, target <= 1.03.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from chorus.v1 import image_pb2, image_pb2_grpc, llm_pb2, llm_pb2_grpc

from bench.timing import alternate
from devtools.processes import ROOT, ServiceProcess, free_port
from services.llm.backends.base import Message
from services.llm.backends.llama_cpp_local import transcript_prompt
from tests.support.llm_servers import IMAGE_SPEC, LLM_SPEC, gemma_gguf
from tests.support.tiny_diffusers import build_tiny_sd

REPEATS = 5
IMAGE_REPEATS = 9  # 20 steps of the tiny model vary by +-10% from run to run here
THREADS = os.cpu_count() or 1
MAX_TOKENS = 128
PROMPT = "Count from one to a thousand: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
SYSTEM = "You are a helpful assistant. Answer briefly."
IMAGE_SIZE, IMAGE_STEPS, IMAGE_SEED = 128, 20, 11


def _medians(runs: tuple[list[float], list[float]]) -> tuple[float, float]:
    return statistics.median(runs[0]), statistics.median(runs[1])


def bench_llm() -> dict[str, float]:
    import llama_cpp

    env = {
        "CHORUS_LLM_CPU_THREADS": str(THREADS),
        "CHORUS_LLM_SYSTEM_PROMPT": SYSTEM,
    }
    proc = ServiceProcess(LLM_SPEC, free_port(), free_port(), env=env).start()
    try:
        proc.wait_ready()
        llama = llama_cpp.Llama(
            model_path=str(gemma_gguf()),
            n_ctx=2048,
            n_threads=THREADS,
            n_threads_batch=THREADS,
            verbose=False,
        )
        prompt = transcript_prompt([Message("system", SYSTEM), Message("user", PROMPT)])
        stub = llm_pb2_grpc.TextGenerationStub(grpc.insecure_channel(proc.address))
        request = llm_pb2.GenerateTextRequest(
            messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=PROMPT)],
            max_tokens=MAX_TOKENS,
            temperature=0.0,
        )

        def service() -> float:
            started = time.perf_counter()
            result = None
            for response in stub.Generate(request, timeout=300):
                if response.HasField("result"):
                    result = response.result
            assert result is not None
            return result.usage.completion_tokens / (time.perf_counter() - started)

        def local() -> float:
            started = time.perf_counter()
            tokens = 0
            for chunk in llama.create_completion(
                prompt.text, max_tokens=MAX_TOKENS, temperature=0.0, stop=prompt.stop, stream=True
            ):
                tokens += chunk["choices"][0]["finish_reason"] is None
            return tokens / (time.perf_counter() - started)

        service_tps, local_tps = _medians(alternate(service, local, REPEATS))
    finally:
        proc.stop()
    return {
        "service_tok_s": service_tps,
        "in_process_tok_s": local_tps,
        "ratio": service_tps / local_tps,
    }


def bench_image() -> dict[str, float]:
    import torch
    from diffusers import StableDiffusionPipeline

    folder = build_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd")
    env = {
        "CHORUS_IMAGE_MODEL": str(folder),
        "CHORUS_IMAGE_CPU_THREADS": str(THREADS),
    }
    proc = ServiceProcess(IMAGE_SPEC, free_port(), free_port(), env=env).start()
    try:
        proc.wait_ready()
        torch.set_num_threads(THREADS)
        pipeline = StableDiffusionPipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        stub = image_pb2_grpc.ImageGenerationStub(grpc.insecure_channel(proc.address))
        request = image_pb2.GenerateImageRequest(
            prompt="a lighthouse at dusk",
            width=IMAGE_SIZE,
            height=IMAGE_SIZE,
            steps=IMAGE_STEPS,
            seed=IMAGE_SEED,
            guidance_scale=7.5,
        )

        def service() -> float:
            started = time.perf_counter()
            for _ in stub.Generate(request, timeout=300):
                pass
            return (time.perf_counter() - started) / IMAGE_STEPS

        def local() -> float:
            started = time.perf_counter()
            with torch.inference_mode():
                image = pipeline(
                    prompt="a lighthouse at dusk",
                    width=IMAGE_SIZE,
                    height=IMAGE_SIZE,
                    num_inference_steps=IMAGE_STEPS,
                    guidance_scale=7.5,
                    generator=[torch.Generator("cpu").manual_seed(IMAGE_SEED)],
                ).images[0]
            image.save(tempfile.SpooledTemporaryFile(), format="PNG")
            return (time.perf_counter() - started) / IMAGE_STEPS

        service_s, local_s = _medians(alternate(service, local, IMAGE_REPEATS))
    finally:
        proc.stop()
    return {
        "service_s_per_step": service_s,
        "in_process_s_per_step": local_s,
        "ratio": service_s / local_s,
    }


def main() -> int:
    results = {"llm gemma-3-270m llama-cpp": bench_llm()}
    print("llm", results["llm gemma-3-270m llama-cpp"], flush=True)
    results["image tiny-sd diffusers"] = bench_image()
    llm, image = results.values()
    print(
        f"\nmedian of {REPEATS} (llm) and {IMAGE_REPEATS} (image) interleaved runs each, "
        f"{THREADS} threads\n"
    )
    print(
        f"llm   {llm['service_tok_s']:7.1f} tok/s service  {llm['in_process_tok_s']:7.1f} tok/s "
        f"in-process  ratio {llm['ratio']:.3f} (target >= 0.97)"
    )
    print(
        f"image {image['service_s_per_step']:7.4f} s/step service "
        f"{image['in_process_s_per_step']:7.4f} "
        f"s/step in-process ratio {image['ratio']:.3f} (target <= 1.03)"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "models.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
