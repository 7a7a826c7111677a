"""The cross-slice ConvLSTM of the training-only motion branch (spec §5).

A grid of nodes ``cell_list.{slice}{layer}``, visited slice by slice and, inside a slice, layer by layer. Each
node runs over t = 0..T-1 with its own (h, c) starting at zero. Besides its input sequence x it receives:

- a "head" sequence: the LSTM input itself for the very first node, afterwards the stacked motion state mh'
  of the node visited just before it (the previous layer, or the last layer of the previous slice);
- a "motion" state (mh, mc) per time step: zeros in slice 0 (fresh at every t, not carried over t), in slice
  s > 0 the (mh', mc') that node (s-1, layer) produced at the same t.

The input sequence of a node is the stacked h' of the node visited before it (the LSTM input for the first),
and the module returns the stacked h' of the last node visited. This is the released code's order; with the
released configuration (1 slice, 1 layer) the motion gates and attentions never influence h', so they
receive no gradient.

Channels: the first node's head sequence is the input itself and the attention output (one token per head
channel) is added to the motion state, so the released node only works when the input width equals the
hidden width; :class:`CrossSliceConvLSTM` checks that.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import SSTNetError

POOL_SIZE = 32  # attention tokens are maps max-pooled to 32×32 and flattened: embed dim 1024
ATTENTION_HEADS = 8
ATTENTION_DROPOUT = 0.1


class CrossSliceConvLSTMNode(nn.Module):
    """One node: a ConvLSTM step with an extra gate input, plus the motion (cross-slice) state update."""

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 3, bias: bool = True,
                 pool_size: int = POOL_SIZE, num_heads: int = ATTENTION_HEADS,
                 dropout: float = ATTENTION_DROPOUT) -> None:
        super().__init__()
        n = hidden_dim
        pad = kernel_size // 2
        self.input_dim = input_dim
        self.hidden_dim = n
        self.pool_size = pool_size
        # Gate inputs: conv on (x, h); conv2 on (x, h, head, mh); the head has the input's width.
        self.conv = nn.Conv2d(input_dim + n, 4 * n, kernel_size, padding=pad, bias=bias)
        self.conv2 = nn.Conv2d(2 * input_dim + 2 * n, 4 * n, kernel_size, padding=pad, bias=bias)
        self.motion = nn.Sequential(nn.Conv2d(input_dim + 2 * n, 4 * n, kernel_size, padding=pad, bias=bias))
        self.mm1 = nn.Conv2d(2 * n, n, kernel_size=1, bias=False)
        self.mm2 = nn.Conv2d(2 * n, n, kernel_size=1, bias=False)
        self.past_attention = nn.MultiheadAttention(pool_size * pool_size, num_heads, dropout=dropout,
                                                    batch_first=True)
        self.future_attention = nn.MultiheadAttention(pool_size * pool_size, num_heads, dropout=dropout,
                                                      batch_first=True)
        self.pool = nn.AdaptiveMaxPool2d(pool_size)

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """B×ch×H×W → B×ch×pool²: one token per channel, the channel max-pooled to pool×pool."""
        return self.pool(z).flatten(start_dim=2)

    def forward(self, x: torch.Tensor, head: torch.Tensor, head_seq: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor], motion_state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One time step. ``x``, ``head``: this step's input and head input; ``head_seq``: the whole head
        sequence B×T×ch×H×W; ``state`` (h, c); ``motion_state`` (mh, mc). Returns h', c', mh', mc'."""
        h, c = state
        mh, mc = motion_state
        n = self.hidden_dim

        # 1. LSTM step; both convs split in the order (i, f, o, g).
        i1, f1, o1, g1 = torch.split(self.conv(torch.cat([x, h], dim=1)), n, dim=1)
        i2, f2, o2, g2 = torch.split(self.conv2(torch.cat([x, h, head, mh], dim=1)), n, dim=1)
        i = torch.sigmoid(i2 + i1)
        f = torch.sigmoid(f2 + f1)
        o = torch.sigmoid(o2 + o1)
        g = torch.tanh(g2 + g1)
        c_next = f * c + i * g
        h_next = o * torch.tanh(c_next)

        # 2. Attention over channel tokens: the past one is queried by the first head frame and keyed on the
        #    motion state; the future one is queried by the last head frame and keyed on the past one's output.
        motion_tokens = self.tokens(mh)
        past, _ = self.past_attention(self.tokens(head_seq[:, 0]), motion_tokens, motion_tokens,
                                      need_weights=False)
        future, _ = self.future_attention(self.tokens(head_seq[:, -1]), past, past, need_weights=False)
        size = mh.shape[-2:]
        past = F.interpolate(past.reshape(past.shape[0], n, self.pool_size, self.pool_size), size=size,
                             mode="bilinear", align_corners=True)
        future = F.interpolate(future.reshape(future.shape[0], n, self.pool_size, self.pool_size), size=size,
                               mode="bilinear", align_corners=True)

        # 3. Motion state update; this conv splits in the order (i, f, g, o).
        u1 = self.mm1(torch.cat([torch.sigmoid(past) + mh, mh], dim=1))
        u2 = self.mm2(torch.cat([torch.sigmoid(future) + mh, mh], dim=1))
        mi, mf, mg, mo = torch.split(self.motion(torch.cat([head, u1, u2], dim=1)), n, dim=1)
        mc_next = torch.sigmoid(mf) * mc + torch.sigmoid(mi) * torch.tanh(mg) + c_next
        mh_next = torch.sigmoid(mo) * torch.tanh(mc_next) + h_next
        return h_next, c_next, mh_next, mc_next


def node_key(slice_index: int, layer_index: int) -> str:
    """The ``cell_list`` key of a node, as released: the two indices written one after the other."""
    return f"{slice_index}{layer_index}"


class CrossSliceConvLSTM(nn.Module):
    """``num_slices`` × ``num_layers`` nodes; maps a B×T×input_dim×H×W sequence to B×T×hidden_dim×H×W."""

    def __init__(self, input_dim: int = 64, hidden_dim: int = 64, kernel_size: int = 3, num_slices: int = 1,
                 num_layers: int = 1, bias: bool = True) -> None:
        super().__init__()
        if input_dim != hidden_dim:
            raise SSTNetError(f"cross-slice ConvLSTM: input width {input_dim} must equal hidden width {hidden_dim} "
                              "(the attention output, one token per input channel, is added to the hidden state)")
        if num_slices < 1 or num_layers < 1:
            raise SSTNetError(f"cross-slice ConvLSTM: need at least 1 slice and 1 layer, got {num_slices} slices and "
                              f"{num_layers} layers")
        if kernel_size % 2 != 1:
            raise SSTNetError(f"cross-slice ConvLSTM: kernel size {kernel_size} must be odd")
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.num_slices = num_slices
        self.num_layers = num_layers
        cells = {node_key(s, l): CrossSliceConvLSTMNode(input_dim, hidden_dim, kernel_size, bias=bias)
                 for s in range(num_slices) for l in range(num_layers)}
        if len(cells) != num_slices * num_layers:
            raise SSTNetError(f"cross-slice ConvLSTM: {num_slices} slices × {num_layers} layers give ambiguous "
                              "node names")
        self.cell_list = nn.ModuleDict(cells)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        if seq.dim() != 5 or seq.shape[2] != self.input_dim:
            raise SSTNetError(f"cross-slice ConvLSTM expects B×T×{self.input_dim}×H×W, got {tuple(seq.shape)}")
        batch, steps, _, height, width = seq.shape
        zeros = seq.new_zeros(batch, self.hidden_dim, height, width)
        x_seq = head_seq = seq
        previous_slice: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # [layer][t] → (mh', mc')
        for s in range(self.num_slices):
            this_slice = []
            for l in range(self.num_layers):
                node = self.cell_list[node_key(s, l)]
                h, c = zeros, zeros
                hs, motion = [], []
                for t in range(steps):
                    mh, mc = (zeros, zeros) if s == 0 else previous_slice[l][t]
                    h, c, mh, mc = node(x_seq[:, t], head_seq[:, t], head_seq, (h, c), (mh, mc))
                    hs.append(h)
                    motion.append((mh, mc))
                x_seq = torch.stack(hs, dim=1)
                head_seq = torch.stack([m[0] for m in motion], dim=1)
                this_slice.append(motion)
            previous_slice = this_slice
        return x_seq
