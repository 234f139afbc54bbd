"""The PyTorch side of issue 31's sequence models, shared by the benchmark
(`tools/torch_ref.py --model char_lstm|gpt`), the parity fixture
(`tools/fixtures/gen_seq31.py`) and the full reference runs (`tools/seq_full_run.py`).

Parameter names are aotgrad's (`aotgrad::nn::{CharLstm, Gpt}`), which are makemore's
and nanoGPT's: `embed.weight`, `lstm.weight_ih_l0`, `head.weight`; `transformer.wte.weight`,
`transformer.h.0.attn.c_attn.weight`, ..., with `lm_head.weight` tied to
`transformer.wte.weight` (the Rust state dict has the latter only).

The corpus and its windows are reimplemented here bit for bit: the same sorted
character vocabulary and 90/10 split as `aotgrad::data::text::CharCorpus`, and the same
SplitMix64 stream per batch (`CharCorpus::windows(part, B, T, seed, index)`), so both
sides train on the same batches in the same order.
"""
import gzip
import math
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "data", "shakespeare", "tragedies.txt.gz")
M64 = (1 << 64) - 1

# The configurations (examples/char_lstm.rs and examples/gpt.rs).
CHAR_LSTM = dict(batch=32, block=64, embed=64, hidden=256, layers=2, lr=2e-3, clip=1.0)
GPT = dict(batch=16, block=128, n_layer=4, n_head=4, n_embd=128, dropout=0.1, lr=1e-3,
           betas=(0.9, 0.95), weight_decay=0.1, clip=1.0, warmup=100, min_lr_factor=0.1)


class Rng:
    """aotgrad::data::Rng: SplitMix64 from `seed ^ 0x6A09E667F3BCC909`."""

    def __init__(self, seed):
        self.s = (seed ^ 0x6A09E667F3BCC909) & M64

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        zone = M64 - M64 % n
        while True:
            v = self.next_u64()
            if v < zone:
                return v % n


class Corpus:
    """aotgrad::data::text::CharCorpus::bundled()."""

    def __init__(self, path=CORPUS, validation_fraction=0.1):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            text = fh.read()
        self.vocab = sorted(set(text))
        ids = {c: i for i, c in enumerate(self.vocab)}
        data = [ids[c] for c in text]
        # Rust's f64::round (half away from zero); no tie occurs for this corpus.
        cut = len(data) - int(math.floor(len(data) * validation_fraction + 0.5))
        self.train, self.validation = data[:cut], data[cut:]

    def windows(self, part, batch, block, seed, index):
        """(x, y) as lists of lists: CharCorpus::windows, the same starts."""
        ids = self.train if part == "train" else self.validation
        starts = len(ids) - block
        rng = Rng((seed ^ ((index * 0xD1B54A32D192ED03) & M64)) & M64)
        xs, ys = [], []
        for _ in range(batch):
            s = rng.below(starts)
            xs.append(ids[s:s + block])
            ys.append(ids[s + 1:s + block + 1])
        return xs, ys


def models(torch):
    nn = torch.nn
    F = torch.nn.functional

    class CharLstm(nn.Module):
        def __init__(self, vocab, embed=64, hidden=256, layers=2):
            super().__init__()
            self.embed = nn.Embedding(vocab, embed)
            self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, idx):
            h, _ = self.lstm(self.embed(idx))
            return self.head(h)

    class CausalSelfAttention(nn.Module):
        def __init__(self, c, n_head, dropout, block, flash):
            super().__init__()
            self.c_attn = nn.Linear(c, 3 * c)
            self.c_proj = nn.Linear(c, c)
            self.attn_dropout = nn.Dropout(dropout)
            self.resid_dropout = nn.Dropout(dropout)
            self.n_head, self.dropout, self.flash = n_head, dropout, flash
            self.register_buffer("bias", torch.tril(torch.ones(block, block)).view(1, 1, block, block),
                                 persistent=False)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(C, dim=2)
            hs = C // self.n_head
            q = q.view(B, T, self.n_head, hs).transpose(1, 2)
            k = k.view(B, T, self.n_head, hs).transpose(1, 2)
            v = v.view(B, T, self.n_head, hs).transpose(1, 2)
            if self.flash:
                y = F.scaled_dot_product_attention(
                    q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
                att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
                att = self.attn_dropout(F.softmax(att, dim=-1))
                y = att @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class Block(nn.Module):
        def __init__(self, c, n_head, dropout, block, flash):
            super().__init__()
            self.ln_1 = nn.LayerNorm(c)
            self.attn = CausalSelfAttention(c, n_head, dropout, block, flash)
            self.ln_2 = nn.LayerNorm(c)
            self.mlp = nn.Module()
            self.mlp.c_fc = nn.Linear(c, 4 * c)
            self.mlp.c_proj = nn.Linear(4 * c, c)
            self.mlp_dropout = nn.Dropout(dropout)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            h = self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))
            return x + self.mlp_dropout(h)

    class Gpt(nn.Module):
        """nanoGPT's GPT (bias=True), with its init."""

        def __init__(self, vocab, block=128, n_layer=4, n_head=4, n_embd=128, dropout=0.1, flash=True):
            super().__init__()
            self.block = block
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab, n_embd),
                wpe=nn.Embedding(block, n_embd),
                drop=nn.Dropout(dropout),
                h=nn.ModuleList([Block(n_embd, n_head, dropout, block, flash) for _ in range(n_layer)]),
                ln_f=nn.LayerNorm(n_embd),
            ))
            self.lm_head = nn.Linear(n_embd, vocab, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith("c_proj.weight"):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx):
            b, t = idx.size()
            pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for blk in self.transformer.h:
                x = blk(x)
            return self.lm_head(self.transformer.ln_f(x))

        def optim_groups(self, weight_decay):
            """nanoGPT's groups: decay every parameter of 2+ dims, not biases and norms."""
            params = {n: p for n, p in self.named_parameters()}
            decay = [p for n, p in params.items() if p.dim() >= 2]
            no_decay = [p for n, p in params.items() if p.dim() < 2]
            return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]

    return CharLstm, Gpt


def token_loss(torch, logits, y):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def warmup_cosine(k, warmup, total, min_factor):
    """aotgrad::lr_schedule::warmup_cosine."""
    if k < warmup:
        return (k + 1) / warmup
    if k >= total:
        return min_factor
    progress = (k - warmup) / max(total - warmup, 1)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def state_dict(model):
    """The model's state dict under aotgrad's names (the tied head dropped)."""
    return {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for byte in s.encode():
        h = ((h ^ byte) * 0x100000001B3) & M64
    return h


def hash_uniform(name, n):
    """n uniforms in [0, 1) with 24 bits each: SplitMix64 outputs of the counters
    fnv1a64(name) + (i + 1) * golden, top 24 bits. tests/training/sequence.rs computes
    the same values bit for bit."""
    import numpy as np

    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def hash_init(name, shape):
    """The parity fixture's initial value of parameter `name`: U(-b, b) with
    b = 1/sqrt(shape[-1]) for matrices, 0.1 for vectors (LayerNorm weights 1 + U(-0.1, 0.1)),
    computed in float64 and rounded once to float32."""
    import numpy as np

    n = int(np.prod(shape))
    u = hash_uniform(name, n)
    if len(shape) >= 2:
        v = (2.0 * u - 1.0) * (1.0 / math.sqrt(shape[-1]))
    else:
        v = (2.0 * u - 1.0) * 0.1
        if ".ln_" in name and name.endswith(".weight"):
            v = 1.0 + v
    return v.astype(np.float32).reshape(shape)
