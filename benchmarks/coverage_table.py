"""The README's coverage table: for models from libraries nobody here wrote (small configs, no
weights downloaded) and the built-in ones, the share of a training step's MACs that the recorded
trace holds, against torch's flop counter with its two miscounts corrected (``trainers.flops``).

Run:  python benchmarks/coverage_table.py      (needs the ``test`` extra: transformers,
      efficientnet-pytorch)

For each model: one training step (forward and backward) under the flop counter, then one
recorded step; "trace" is every layer's MACs times the phases the step ran, "manifest" the
recorder's own figure (``sparsesim info``), which also names what it left out.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traces.format import Trace  # noqa: E402
from trainers.flops import training_macs  # noqa: E402
from trainers.models import build_model  # noqa: E402
from trainers.recorder import record  # noqa: E402
from trainers.sparse_fn import sparsify  # noqa: E402


def _models() -> dict:
    import transformers
    from efficientnet_pytorch import EfficientNet

    transformers.logging.set_verbosity_error()
    t = transformers
    ids = torch.randint(0, 1000, (4, 64), generator=torch.Generator().manual_seed(0))
    tokens = {"input_ids": ids, "labels": ids}

    def lm(model):
        return model, lambda m: m(**tokens).loss

    def image(model, shape, classes=10):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(*shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)
        return model, lambda m: F.cross_entropy(m(x), y)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(1000, 128)
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(128, 4, 512, batch_first=True),
                4,
                enable_nested_tensor=False,
            )
            self.head = nn.Linear(128, 1000)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x)))

    def pruned(api: str):
        m = build_model("resnet20")
        convs = [(mod, "weight") for mod in m.modules() if isinstance(mod, nn.Conv2d)]
        if api == "prune":
            from torch.nn.utils import prune

            prune.global_unstructured(convs, prune.L1Unstructured, amount=0.9)
        else:
            from torch.ao.pruning import WeightNormSparsifier

            sp = WeightNormSparsifier(
                sparsity_level=0.9, sparse_block_shape=(1, 4), zeros_per_block=4
            )
            names = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)]
            sp.prepare(m, [{"tensor_fqn": f"{n}.weight"} for n in names])
            sp.step()
        return image(m, (16, 3, 32, 32))

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(1000, 128)
            self.rnn = nn.LSTM(128, 128, batch_first=True)
            self.head = nn.Linear(128, 1000)

        def forward(self, x):
            return self.head(self.rnn(self.embed(x))[0])

    def token_loss(m):
        return F.cross_entropy(m(tokens["input_ids"]).flatten(0, 1), tokens["input_ids"].flatten())

    def gpt2(attention: str):
        return lm(t.GPT2LMHeadModel(t.GPT2Config(
            n_embd=128, n_layer=4, n_head=4, vocab_size=1000, n_positions=64,
            attn_implementation=attention)))

    enc = Encoder()
    return {
        "transformers GPT-2 (GPT2LMHeadModel, 4×128, eager attention)": gpt2("eager"),
        "transformers GPT-2 (SDPA attention)": gpt2("sdpa"),
        "transformers BERT (BertForMaskedLM, 4×128)": lm(
            t.BertForMaskedLM(
                t.BertConfig(
                    hidden_size=128,
                    num_hidden_layers=4,
                    num_attention_heads=4,
                    intermediate_size=512,
                    vocab_size=1000,
                    max_position_embeddings=64,
                    attn_implementation="eager",
                )
            )
        ),
        "transformers Llama (SDPA, grouped-query)": lm(
            t.LlamaForCausalLM(
                t.LlamaConfig(
                    hidden_size=128,
                    num_hidden_layers=4,
                    num_attention_heads=4,
                    num_key_value_heads=2,
                    intermediate_size=256,
                    vocab_size=1000,
                    max_position_embeddings=64,
                    attn_implementation="sdpa",
                )
            )
        ),
        "torch.nn.TransformerEncoder (4 layers, 128)": (enc, token_loss),
        "nn.LSTM language model (torch.lstm: named, not recordable)": (Recurrent(), token_loss),
        "efficientnet-pytorch EfficientNet-B0 (32×32)": image(
            EfficientNet.from_name("efficientnet-b0", num_classes=10, image_size=32), (8, 3, 32, 32)
        ),
        "ResNet-20 pruned by torch.nn.utils.prune (90 %)": pruned("prune"),
        "ResNet-20, fc by torch.ao WeightNormSparsifier": pruned("ao"),
        "sparsesim vit-mini (sparse twins + attention)": image(
            sparsify(build_model("vit-mini")), (16, 3, 32, 32)
        ),
    }


def coverage(model: nn.Module, loss_fn, out: Path) -> tuple[int, int, float]:
    """(reference MACs, trace MACs, the manifest's percent) of one training step."""
    model.train()
    ref = training_macs(lambda: loss_fn(model).backward())
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with record(model, out, every=1):
            loss_fn(model).backward()
    trace = Trace(out)
    m = trace.manifest
    st = next(iter(trace))
    skip_x = set(st.meta.get("bwd_input_not_computed", ()))
    skip_w = set(st.meta.get("bwd_weight_not_computed", ()))
    got = sum(
        la.macs(m.batch_size) * (1 + (la.name not in skip_x) + (la.name not in skip_w))
        for la in m.layers
    )
    return ref, got, m.coverage["percent"]


def main() -> int:
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="coverage-"))
    print(
        "| model (small config, no pretrained weights) | training MACs / step | in the trace "
        "| manifest |"
    )
    print("|---|---:|---:|---:|")
    worst = 100.0
    for i, (name, (model, loss_fn)) in enumerate(_models().items()):
        ref, got, pct = coverage(model, loss_fn, work / f"t{i}")
        share = 100.0 * got / ref
        worst = min(worst, share)
        print(f"| {name} | {ref:,} | {share:.2f} % | {pct:.2f} % |")
    print(
        "in the trace: the trace's MACs / the corrected flop counter's (which counts no "
        "MACs inside torch.lstm); manifest: the recorder's own share, its left-out products "
        "counted"
    )
    return 0 if worst >= 99.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
