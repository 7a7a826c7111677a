"""The cross-slice ConvLSTM of the training-only motion branch (docs/design.md, Motion branch).

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

Two computations of the same function (``fast`` switches between them):

- released: the authors' operations, step by step;
- fast: ``conv`` and ``conv2`` are linear in the concatenation of their inputs, so their sum is ONE convolution
  whose weight is assembled from both (inside the forward, so every parameter gets its released gradient).
  Inputs that are known to be zero get no columns: the motion state mh in slice 0 and h at t = 0; for the first
  node, where the head input is x itself, the head columns are added to the x columns. The motion update
  (attentions, ``mm1``, ``mm2``, ``motion``) of the last node visited is skipped: its (mh', mc') is nobody's
  input. Every other node keeps it (its mh' is the next node's head input, its (mh', mc') the next slice's
  motion state), so with the released 1 slice × 1 layer the only node skips it.

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
        mh_next, mc_next = self.motion_update(head, head_seq, h_next, c_next, mh, mc)
        return h_next, c_next, mh_next, mc_next

    def motion_update(self, head: torch.Tensor, head_seq: torch.Tensor, h_next: torch.Tensor, c_next: torch.Tensor,
                      mh: torch.Tensor, mc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 2–3 of a node step: the new motion state (mh', mc') from this step's head input, the head
        sequence, the LSTM's new (h', c') and the incoming motion state (mh, mc)."""
        n = self.hidden_dim

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
        return mh_next, mc_next

    def merged_gates(self, head_is_input: bool, motion_is_zero: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``conv`` and ``conv2`` as ONE convolution over concat(x, head, mh, h): its (weight, bias).

        conv(cat(x, h)) + conv2(cat(x, h, head, mh)) is linear in each input, so each input's weight is the sum
        of both convs' columns for it. ``head_is_input`` (head = x): the head columns join x's and the head is
        left out of the concatenation; ``motion_is_zero`` (mh = 0): mh is left out with its columns. Assembled
        from the parameters on every call, so autograd gives each of them its released gradient (zero on the
        columns of a zero mh, as released).
        """
        d, n = self.input_dim, self.hidden_dim
        w1_x, w1_h = self.conv.weight.split([d, n], dim=1)
        w2_x, w2_h, w2_head, w2_mh = self.conv2.weight.split([d, n, d, n], dim=1)
        columns = [w1_x + w2_x + w2_head] if head_is_input else [w1_x + w2_x, w2_head]
        if not motion_is_zero:
            columns.append(w2_mh)
        columns.append(w1_h + w2_h)
        bias = None if self.conv.bias is None else self.conv.bias + self.conv2.bias
        return torch.cat(columns, dim=1), bias

    def run_fast(self, x_seq: torch.Tensor, head_seq: torch.Tensor,
                 motion_seq: list[tuple[torch.Tensor, torch.Tensor]] | None, head_is_input: bool,
                 update_motion: bool) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """All T steps of this node, fast computation (see the module docstring); same result as T calls.

        ``motion_seq``: the incoming (mh, mc) per step, None when they are zero (slice 0). Returns the stacked
        h' (B×T×n×H×W) and, when ``update_motion``, the per-step (mh', mc'); otherwise steps 2–3 are skipped and
        None is returned in their place.
        """
        n = self.hidden_dim
        weight, bias = self.merged_gates(head_is_input, motion_seq is None)
        padding = self.conv.padding
        zeros = None  # the slice-0 motion state, only built when the motion update needs it
        if update_motion and motion_seq is None:
            zeros = x_seq.new_zeros(x_seq.shape[0], n, *x_seq.shape[-2:])
        h = c = None  # zero at t = 0, so left out of the sums rather than added
        hs, motion = [], []
        for t in range(x_seq.shape[1]):
            inputs = [x_seq[:, t]]
            if not head_is_input:
                inputs.append(head_seq[:, t])
            if motion_seq is not None:
                inputs.append(motion_seq[t][0])
            if h is None:
                gates = F.conv2d(_concat(inputs), weight[:, :-n], bias, padding=padding)
            else:
                gates = F.conv2d(_concat(inputs + [h]), weight, bias, padding=padding)
            i, f, o, g = torch.split(gates, n, dim=1)
            i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
            c = i * g if c is None else f * c + i * g
            h = o * torch.tanh(c)
            hs.append(h)
            if update_motion:
                mh, mc = (zeros, zeros) if motion_seq is None else motion_seq[t]
                motion.append(self.motion_update(head_seq[:, t], head_seq, h, c, mh, mc))
        return torch.stack(hs, dim=1), motion if update_motion else None


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Channel concatenation that does not copy a lone tensor."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)


def node_key(slice_index: int, layer_index: int) -> str:
    """The ``cell_list`` key of a node, as released: the two indices written one after the other."""
    return f"{slice_index}{layer_index}"


class CrossSliceConvLSTM(nn.Module):
    """``num_slices`` × ``num_layers`` nodes; maps a B×T×input_dim×H×W sequence to B×T×hidden_dim×H×W.
    ``fast`` picks the computation (module docstring)."""

    def __init__(self, input_dim: int = 64, hidden_dim: int = 64, kernel_size: int = 3, num_slices: int = 1,
                 num_layers: int = 1, bias: bool = True, fast: bool = True) -> None:
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
        cells = {node_key(s, layer): CrossSliceConvLSTMNode(input_dim, hidden_dim, kernel_size, bias=bias)
                 for s in range(num_slices) for layer in range(num_layers)}
        if len(cells) != num_slices * num_layers:
            raise SSTNetError(f"cross-slice ConvLSTM: {num_slices} slices × {num_layers} layers give ambiguous "
                              "node names")
        self.cell_list = nn.ModuleDict(cells)
        self.fast = fast

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """B×T×input_dim×H×W → the last node's h' sequence, B×T×hidden_dim×H×W.

        The fast computation skips the last node's attentions, so in training mode it draws fewer random numbers
        (attention dropout) than the released one: the nodes before it draw the same, in the same order, but the
        generator is left in a different state afterwards.
        """
        if seq.dim() != 5 or seq.shape[2] != self.input_dim:
            raise SSTNetError(f"cross-slice ConvLSTM expects B×T×{self.input_dim}×H×W, got {tuple(seq.shape)}")
        return self._forward_fast(seq) if self.fast else self._forward_released(seq)

    def _forward_fast(self, seq: torch.Tensor) -> torch.Tensor:
        x_seq = head_seq = seq
        # Per layer, the per-step (mh', mc') of that layer's node in the previous slice; None: zeros (slice 0).
        previous_slice: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = [None] * self.num_layers
        for s in range(self.num_slices):
            for layer in range(self.num_layers):
                last = s == self.num_slices - 1 and layer == self.num_layers - 1
                x_seq, motion = self.cell_list[node_key(s, layer)].run_fast(
                    x_seq, head_seq, previous_slice[layer], head_is_input=s == 0 and layer == 0, update_motion=not last)
                if not last:
                    head_seq = torch.stack([mh for mh, _ in motion], dim=1)
                    previous_slice[layer] = motion
        return x_seq

    def _forward_released(self, seq: torch.Tensor) -> torch.Tensor:
        batch, steps, _, height, width = seq.shape
        zeros = seq.new_zeros(batch, self.hidden_dim, height, width)
        x_seq = head_seq = seq
        previous_slice: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # [layer][t] → (mh', mc')
        for s in range(self.num_slices):
            this_slice = []
            for layer in range(self.num_layers):
                node = self.cell_list[node_key(s, layer)]
                h, c = zeros, zeros
                hs, motion = [], []
                for t in range(steps):
                    mh, mc = (zeros, zeros) if s == 0 else previous_slice[layer][t]
                    h, c, mh, mc = node(x_seq[:, t], head_seq[:, t], head_seq, (h, c), (mh, mc))
                    hs.append(h)
                    motion.append((mh, mc))
                x_seq = torch.stack(hs, dim=1)
                head_seq = torch.stack([m[0] for m in motion], dim=1)
                this_slice.append(motion)
            previous_slice = this_slice
        return x_seq
