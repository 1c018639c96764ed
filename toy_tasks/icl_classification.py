"""In-context classification (Reddy, ICLR 2024; the minimal version of Chan et al. 2022).

Data, following Reddy's own generator (datasets_v2.py) where the paper leaves room:
- K classes with means μ_k ~ N(0, I/D) and L labels with vectors ~ N(0, I/D), all fixed per task
  seed; class k has label k mod L. Rank-frequency P(k) ∝ k^-α over the K classes.
- An item of class k is x = (μ_k + ε η) / sqrt(1 + ε²) with fresh η ~ N(0, I/D) at every occurrence
  (the query's too). Label tokens carry the bare label vector.
- A sequence is N item-label pairs and a query item; the target is the query's label. Tokens are
  [one-hot position (2·n_max + 1 dims) | content (D dims)]; the block of 2N + 1 positions sits at a
  random offset (0 ... 2(n_max − N)) drawn per sequence.
- Bursty (probability p_B): N/B classes appear B times each, shuffled; the query's class is one of
  them. As in Reddy's `no_repeats` mode the N/B classes carry distinct labels (labels drawn without
  replacement, class = label + L·(uniform block)), which makes bursty contexts ignore P; with
  `zipf_bursty` (Chan-style) the bursty classes are drawn from P instead, distinct classes.
- Otherwise the N items and the query are drawn i.i.d. from P (the query's class is usually absent).
- Novel (probability p_C): bursty, with fresh class means for every context class and distinct
  random labels — classes never seen in training.
Evaluations: IC = novel classes, bursty; IC2 = known classes, bursty, every context label shifted by
one (label + 1 mod L) and the target shifted with it; IW = i.i.d. items and query (B = 0).

Model (`ICLNet`, Reddy's minimal network): two single-head attention-only layers with residuals,
full 128 x 128 Q, K, V, no output projection, no LayerNorm, no 1/sqrt(d) scaling, causal; then a
3-layer ReLU MLP (scalar biases) and a linear readout to L logits, from the query position only.
Hook points carry TransformerLens names (`blocks.{l}.attn.hook_pattern`, ...), so the progress
measures read the same activations a researcher would probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookedRootModule, HookPoint


@dataclass(frozen=True)
class TaskSpec:
    K: int = 512
    """Classes."""
    L: int = 32
    """Labels (class k has label k mod L)."""
    D: int = 63
    """Content dimension of items and labels."""
    N: int = 8
    """Item-label pairs in the context."""
    n_max: int = 32
    """Largest N the positional code allows: 2·n_max + 1 one-hot positions."""
    eps: float = 0.1
    """Within-class noise ε."""
    alpha: float = 0.0
    """Rank-frequency exponent α: P(k) ∝ k^-α."""
    B: int = 2
    """Burstiness: occurrences of each class in a bursty context."""
    p_B: float = 1.0
    """Probability that a training sequence is bursty."""
    p_C: float = 0.0
    """Probability that a training sequence uses novel classes."""
    zipf_bursty: bool = False
    """Chan-style: draw the bursty classes from P (distinct classes) instead of distinct labels."""

    @property
    def d_token(self) -> int:
        return 2 * self.n_max + 1 + self.D


@dataclass
class ICLTask:
    spec: TaskSpec
    mus_class: Float[Tensor, "K D"]
    mus_label: Float[Tensor, "L D"]
    P: Float[Tensor, " K"]


def check_spec(spec: TaskSpec) -> None:
    """A task that can be sampled: K a multiple of L, B dividing N and below it, N ≤ n_max."""
    if spec.K % spec.L or spec.N % max(spec.B, 1) or spec.B >= spec.N or spec.N > spec.n_max:
        from interp import InterpError

        raise InterpError(f"Inconsistent task (K = {spec.K}, L = {spec.L}, N = {spec.N}, B = {spec.B}, n_max = {spec.n_max}): "
                          "K must be a multiple of L, B must divide N and be < N, N ≤ n_max.")


def make_task(spec: TaskSpec, seed: int = 0) -> ICLTask:
    check_spec(spec)
    g = torch.Generator().manual_seed(seed)
    s = 1 / math.sqrt(spec.D)
    P = torch.arange(1, spec.K + 1, dtype=torch.float).pow(-spec.alpha)
    return ICLTask(spec, torch.randn(spec.K, spec.D, generator=g) * s, torch.randn(spec.L, spec.D, generator=g) * s, P / P.sum())


@dataclass
class Batch:
    inputs: Float[Tensor, "batch seq d_token"]
    target: Int[Tensor, " batch"]  # the query's label (shifted in IC2)
    context_labels: Int[Tensor, "batch N"]
    item_match: Float[Tensor, "batch N"]  # 1 where a context item has the query's class
    query_class: Int[Tensor, " batch"]  # -1 for novel classes


def sample(task: ICLTask, batch: int, generator: torch.Generator, p_B: float | None = None, p_C: float | None = None,
           flip_labels: bool = False, iid: bool = False) -> Batch:
    """One batch, built with array ops over the whole batch."""
    sp = task.spec
    p_B = 0.0 if iid else sp.p_B if p_B is None else p_B
    p_C = 0.0 if iid else sp.p_C if p_C is None else p_C
    g, N, L, D = generator, sp.N, sp.L, sp.D
    n_cls = N // sp.B  # distinct classes of a bursty context
    novel = torch.rand(batch, generator=g) < p_C
    bursty = (torch.rand(batch, generator=g) < p_B) | novel

    # Bursty contexts: n_cls classes with distinct labels, each B times, shuffled.
    if sp.zipf_bursty:
        b_classes = torch.multinomial(task.P.expand(batch, -1), n_cls, replacement=False, generator=g)
    else:
        b_labels = torch.rand(batch, L, generator=g).argsort(-1)[:, :n_cls]
        b_classes = b_labels + L * torch.randint(sp.K // L, (batch, n_cls), generator=g)
    slot = torch.arange(N).remainder(n_cls).expand(batch, -1)  # each class slot B times
    slot = slot.gather(1, torch.rand(batch, N, generator=g).argsort(-1))  # shuffled: [batch, N] -> class slot
    b_query_slot = slot.gather(1, torch.randint(N, (batch, 1), generator=g)).squeeze(1)

    # i.i.d. contexts: items and query from P.
    iid_classes = torch.multinomial(task.P.expand(batch, -1), N + 1, replacement=True, generator=g)

    classes = torch.where(bursty[:, None], b_classes.gather(1, slot), iid_classes[:, :N])  # [batch, N]
    q_class = torch.where(bursty, b_classes.gather(1, b_query_slot[:, None]).squeeze(1), iid_classes[:, N])
    labels = classes % L
    q_label = q_class % L

    # Class means; novel sequences get fresh means per context class slot and fresh distinct labels.
    means = task.mus_class[classes]  # [batch, N, D]
    q_mean = task.mus_class[q_class]
    if novel.any():
        fresh = torch.randn(batch, n_cls, D, generator=g) / math.sqrt(D)
        fresh_labels = torch.rand(batch, L, generator=g).argsort(-1)[:, :n_cls]
        means = torch.where(novel[:, None, None], fresh.gather(1, slot[..., None].expand(-1, -1, D)), means)
        q_mean = torch.where(novel[:, None], fresh.gather(1, b_query_slot[:, None, None].expand(-1, 1, D)).squeeze(1), q_mean)
        labels = torch.where(novel[:, None], fresh_labels.gather(1, slot), labels)
        q_label = torch.where(novel, fresh_labels.gather(1, b_query_slot[:, None]).squeeze(1), q_label)
        same = torch.where(novel[:, None], slot == b_query_slot[:, None], classes == q_class[:, None])
    else:
        same = classes == q_class[:, None]
    if flip_labels:
        labels, q_label = (labels + 1) % L, (q_label + 1) % L

    noise = torch.randn(batch, N + 1, D, generator=g) / math.sqrt(D)
    items = (torch.cat([means, q_mean[:, None]], 1) + sp.eps * noise) / math.sqrt(1 + sp.eps**2)  # [batch, N+1, D]
    content = torch.zeros(batch, 2 * N + 1, D)
    content[:, 0 : 2 * N : 2] = items[:, :N]
    content[:, 1 : 2 * N : 2] = task.mus_label[labels]
    content[:, 2 * N] = items[:, N]
    n_pos = 2 * sp.n_max + 1
    offset = torch.randint(n_pos - (2 * N + 1) + 1, (batch,), generator=g)
    pos = F.one_hot(offset[:, None] + torch.arange(2 * N + 1), n_pos).float()
    return Batch(torch.cat([pos, content], -1), q_label, labels, same.float(), torch.where(novel, -1, q_class))


class Attention(nn.Module):
    """Single-head causal attention, full Q/K/V, no output projection, no scaling (Reddy's layer)."""

    def __init__(self, d: int, init_std: float):
        super().__init__()
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.randn(d, d) * init_std) for _ in range(3))
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch pos d"]:
        q, k, v = self.hook_q(x @ self.W_Q), self.hook_k(x @ self.W_K), self.hook_v(x @ self.W_V)
        T = x.shape[1]
        scores = (q @ k.transpose(-1, -2)).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        pattern = self.hook_pattern(self.hook_attn_scores(scores[:, None]).softmax(-1))  # [batch, head=1, q, k]
        return self.hook_z(pattern[:, 0] @ v)


class ICLNet(HookedRootModule):
    """Two attention-only layers with residuals, then an MLP readout from the query position."""

    def __init__(self, spec: TaskSpec, n_layers: int = 2, mlp_layers: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        d = spec.d_token
        self.hook_embed = HookPoint()  # the input tokens
        self.blocks = nn.ModuleList()
        for _ in range(n_layers):
            block = nn.Module()
            block.attn = Attention(d, 1 / math.sqrt(spec.D))
            block.hook_attn_out, block.hook_resid_post = HookPoint(), HookPoint()
            self.blocks.append(block)
        self.mlp_W = nn.ParameterList(nn.Parameter(torch.randn(d, d) * math.sqrt(2 / d)) for _ in range(mlp_layers))
        self.mlp_b = nn.ParameterList(nn.Parameter(torch.zeros(1)) for _ in range(mlp_layers))
        self.W_out = nn.Parameter(torch.randn(d, spec.L) / math.sqrt(d))
        self.hook_readout_in, self.hook_mlp_post, self.hook_logits = HookPoint(), HookPoint(), HookPoint()
        self.setup()

    def forward(self, inputs: Float[Tensor, "batch seq d"]) -> Float[Tensor, "batch L"]:
        x = self.hook_embed(inputs)
        for block in self.blocks:
            x = block.hook_resid_post(x + block.hook_attn_out(block.attn(x)))
        h = self.hook_readout_in(x[:, -1])  # [batch, d]: the query position
        for W, b in zip(self.mlp_W, self.mlp_b):
            h = torch.relu(h @ W + b)
        return self.hook_logits(self.hook_mlp_post(h) @ self.W_out)


def hooked_transformer(spec: TaskSpec, n_layers: int = 2, n_heads: int = 1, seed: int = 0):
    """The second option: a standard small HookedTransformer (LayerNorm, MLPs, 1/sqrt(d) scaling)
    fed the same 128-d tokens as its residual stream, read out at the query position."""
    from interp.models import toy_model

    cfg = dict(n_layers=n_layers, d_model=spec.d_token, n_heads=n_heads, d_head=spec.d_token // n_heads,
               d_mlp=4 * spec.d_token, n_ctx=2 * spec.N + 1, d_vocab=spec.L, act_fn="relu", normalization_type="LN")
    module = toy_model(cfg, seed=seed).module

    class Readout(nn.Module):
        def __init__(self):
            super().__init__()
            self.ht = module

        def forward(self, inputs):
            return self.ht(inputs, start_at_layer=0)[:, -1]  # tokens are the residual stream; query logits

    return Readout()


def loss(model: nn.Module, batch: Batch) -> Tensor:
    return F.cross_entropy(model(batch.inputs), batch.target)


def accuracy(model: nn.Module, batch: Batch) -> float:
    with torch.no_grad():
        return (model(batch.inputs).argmax(-1) == batch.target).float().mean().item()


def progress(model: ICLNet, batch: Batch) -> dict[str, float]:
    """Progress measures on a (bursty) batch, from the hooked attention patterns.

    prev_token_L1      layer-1 attention from each label token to the item just before it
    induction_L2       query's layer-2 attention to labels after items of its class, minus its
                       attention to the other labels
    attn_correct_L2    total query attention (layer 2) to labels after items of its class
    attn_labels_L2     total query attention (layer 2) to all label tokens
    context_label_acc  the prediction is one of the labels in the context
    """
    N = batch.context_labels.shape[1]
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    A1 = cache["blocks.0.attn.hook_pattern"][:, 0]  # [batch, q, k]
    A2 = cache["blocks.1.attn.hook_pattern"][:, 0]
    label_pos = torch.arange(1, 2 * N, 2)
    prev = A1[:, label_pos, label_pos - 1].mean().item()
    to_labels = A2[:, -1, label_pos]  # [batch, N]: query -> each context label
    correct = (to_labels * batch.item_match).sum(-1)
    rest = (to_labels * (1 - batch.item_match)).sum(-1)
    pred = logits.argmax(-1)
    in_context = (pred[:, None] == batch.context_labels).any(-1)
    return {"prev_token_L1": prev, "induction_L2": (correct - rest).mean().item(), "attn_correct_L2": correct.mean().item(),
            "attn_labels_L2": to_labels.sum(-1).mean().item(), "context_label_acc": in_context.float().mean().item()}


# -------------------------------------------------------------------------- self-describing checkpoints

NET_META = "interp_icl.json"


def task_spec(spec: TaskSpec, task_seed: int, net_seed: int) -> dict:
    """What a checkpoint saves beside its weights so that `from_spec` rebuilds its task."""
    from dataclasses import asdict

    return {"name": "icl_classification", "spec": asdict(spec), "seed": task_seed, "net_seed": net_seed}


def from_spec(saved: dict) -> ICLTask:
    return make_task(TaskSpec(**saved["spec"]), seed=saved["seed"])


def save_net(net: ICLNet, folder, task: dict) -> None:
    """`net` as a folder: model.safetensors and interp_icl.json (its task spec and seeds). Atomic."""
    import json

    from safetensors.torch import save_file

    from interp.fsutil import atomic_dir

    with atomic_dir(folder) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / NET_META).write_text(json.dumps({"format": 1, "task": task}, indent=2))


def load_net(folder) -> tuple[ICLNet, ICLTask, dict]:
    """The network saved by `save_net`, in eval mode, with its task and the saved spec."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from interp import InterpError

    folder = Path(folder)
    try:
        task = json.loads((folder / NET_META).read_text())["task"]
        state = load_file(str(folder / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise InterpError(f"The ICL network in {folder} cannot be read ({type(e).__name__}: {e}): train it again.") from e
    spec = TaskSpec(**task["spec"])
    net = ICLNet(spec, seed=task["net_seed"])
    net.load_state_dict(state)
    return net.eval(), from_spec(task), task
