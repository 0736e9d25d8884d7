"""LoRA-DPO of the embedded GGUF model on CPU, and greedy answers from it (the `dpo` extra).

transformers reads the GGUF itself (`gguf_file=`, dequantized to fp32), so the adapter is trained
on the very weights llama.cpp serves. What this machine taught (issue 14, measured): training is
refused until `model.hf_quantizer.remove_quantization_config(model)`; TRL's DPOConfig has
`max_length` (no `max_prompt_length`) and turns gradient checkpointing on by default, which is
~18% slower here; LoRA r=16 on q/k/v/o with batch 2 costs ~3 s per pair per epoch on 2 threads.
The reference policy is the same model with the adapter off (TRL does that for a PEFT model), so
one copy of the weights serves both.

Nothing here is imported by bench/learning/versus_dpo.py until the extra is known to be installed.
"""

from __future__ import annotations

import importlib.util
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL = "pip install torch==2.13.0 && pip install -e '.[dpo]'"
PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "gguf", "datasets")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def missing_packages() -> list[str]:
    """The dpo extra's import names that are not installed (without importing any of them)."""
    return [p for p in PACKAGES if importlib.util.find_spec(p) is None]


@dataclass
class Answer:
    text: str
    tokens: int
    truncated: bool  # the token cap came before the end of the answer


@dataclass
class Training:
    lr: float
    epochs: float
    pairs: int
    steps: int
    seconds: float
    peak_rss_mb: float
    losses: list[float]
    rewards_margin: float | None


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """This process's peak resident memory (MB) while the block runs, sampled every 0.2 s."""
    import psutil

    proc, out, stop = psutil.Process(), {"mb": 0.0}, threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["mb"] = max(out["mb"], proc.memory_info().rss / 2**20)
            stop.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["mb"] = round(max(out["mb"], proc.memory_info().rss / 2**20), 1)


def dpo_config(output_dir: str, *, lr: float, epochs: float, batch: int = 2, beta: float = 0.1,
               max_length: int = 512, seed: int = 0) -> Any:  # fmt: skip
    """TRL's DPOConfig for CPU: `max_length` bounds prompt + answer (there is no
    max_prompt_length), gradient checkpointing off (on by default; ~18% slower here), no saves."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=output_dir, learning_rate=lr, num_train_epochs=epochs, per_device_train_batch_size=batch,
        beta=beta, max_length=max_length, gradient_checkpointing=False, use_cpu=True, bf16=False,
        save_strategy="no", report_to="none", logging_steps=1, seed=seed, disable_tqdm=True,
    )  # fmt: skip


class Policy:
    """The GGUF model in transformers: answers greedily, trains a LoRA-DPO adapter, drops it."""

    def __init__(self, gguf: Path, threads: int = 2) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        started = time.monotonic()
        self.tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # a GGUF-loaded model is marked quantized, and Trainer refuses to train one
        self.model.hf_quantizer.remove_quantization_config(self.model)
        self.load_seconds = round(time.monotonic() - started, 1)
        self.end_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS]

    def answer(
        self, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int, batch: int = 6
    ) -> list[Answer]:
        """Greedy answers under the chat template, `batch` conversations at a time (left-padded)."""
        import torch

        tok, out = self.tokenizer, []
        side, tok.padding_side = tok.padding_side, "left"
        self.model.eval()
        try:
            for i in range(0, len(conversations), batch):
                enc = tok.apply_chat_template(list(conversations[i : i + batch]), add_generation_prompt=True,
                                              return_tensors="pt", padding=True, return_dict=True)  # fmt: skip
                with torch.no_grad():
                    gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                              eos_token_id=self.end_ids, pad_token_id=tok.pad_token_id)  # fmt: skip
                for row in gen[:, enc["input_ids"].shape[1] :].tolist():
                    ended = next((k for k, t in enumerate(row) if t in self.end_ids), None)
                    kept = row if ended is None else row[:ended]
                    out.append(Answer(tok.decode(kept, skip_special_tokens=True).strip(), len(kept), ended is None))
        finally:
            tok.padding_side = side
        return out

    def train(
        self, rows: Sequence[dict[str, Any]], *, lr: float, epochs: float, batch: int = 2, beta: float = 0.1,
        max_length: int = 512, rank: int = 16, seed: int = 0,
    ) -> Training:  # fmt: skip
        """Fit a LoRA adapter by DPO on `rows` ({prompt, chosen, rejected} conversational rows);
        the model answers with it until `reset()`."""
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import PrinterCallback
        from trl import DPOTrainer

        data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                          task_type="CAUSAL_LM")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="speclearn-dpo-") as tmp:
            config = dpo_config(tmp, lr=lr, epochs=epochs, batch=batch, beta=beta, max_length=max_length, seed=seed)
            self.model.train()
            trainer = DPOTrainer(model=self.model, args=config, train_dataset=data, processing_class=self.tokenizer,
                                 peft_config=lora)  # fmt: skip
            trainer.remove_callback(PrinterCallback)  # the losses go to the report, not to stdout
            with peak_rss() as rss:
                started = time.monotonic()
                trainer.train()
                seconds = time.monotonic() - started
        logs = [h for h in trainer.state.log_history if "loss" in h]
        self.model = trainer.model
        margins = [h["rewards/margins"] for h in logs if "rewards/margins" in h]
        return Training(lr, epochs, len(rows), trainer.state.global_step, round(seconds, 1), rss["mb"],
                        [round(h["loss"], 4) for h in logs], round(margins[-1], 3) if margins else None)  # fmt: skip

    def reset(self) -> None:
        """Drop the adapter: the base model again."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
