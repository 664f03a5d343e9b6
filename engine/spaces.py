"""The one place that chooses, reads and edits latent spaces: z, w, wp (W+), one wp layer, a range of layers.

A direction lives in a ``LatentSpace``:

    z        the drawn code (n, z_dim)
    w        the mapping network's output, before truncation (n, w_dim)
    wp       every layer's code, flattened: (n, num_ws * w_dim)
    wp[L]    layer L of wp: w-sized

Codes of a space are read from a store (``LatentView``, streamed chunk by chunk) or computed from z through
the generator (``codes_from_z``); edited codes go back to the synthesis network as per-layer codes
(``synthesis_input``). A w-sized direction (w or one wp layer) can also be applied to a range of layers only
(``layers=(first, last)``: GANSpace's layer-wise edits), the other layers keeping their codes.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.store import Store, StoreError, read_ahead

SPACES = ("z", "w", "wp")
_LABEL = re.compile(r"^(z|w|wp)(?:\[(\d+)\])?$")


@dataclass(frozen=True)
class LatentSpace:
    """A latent space: ``name`` in z | w | wp, and for wp optionally one ``layer``."""

    name: str
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.name not in SPACES:
            raise ValueError(f"space must be z, w or wp; got {self.name!r}")
        if self.layer is not None:
            if self.name != "wp":
                raise ValueError(f"layer selects one layer of the wp space; it does not apply to {self.name!r}")
            if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)) or self.layer < 0:
                raise ValueError(f"layer must be a non-negative integer; got {self.layer!r}")
            object.__setattr__(self, "layer", int(self.layer))

    @classmethod
    def of(cls, space: "str | LatentSpace", layer: int | None = None) -> "LatentSpace":
        """From a name ('z', 'w', 'wp') and a layer, a label ('wp[4]'), or a LatentSpace."""
        if isinstance(space, LatentSpace):
            return space if layer is None else cls(space.name, layer)
        match = _LABEL.match(str(space))
        if match and match.group(2) is not None:
            if layer is not None and int(match.group(2)) != layer:
                raise ValueError(f"space {space!r} and layer {layer} disagree")
            return cls("wp", int(match.group(2)))
        return cls(str(space), layer)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "LatentSpace":
        """The space a stored direction records (its ``space`` and ``layer`` attrs)."""
        return cls.of(attrs.get("space"), attrs.get("layer"))

    @property
    def label(self) -> str:
        return self.name if self.layer is None else f"{self.name}[{self.layer}]"

    @property
    def suffix(self) -> str:
        """What a result's name carries to say its space: '' in z, '@w', '@wp', '@wp4'."""
        if self.name == "z":
            return ""
        return f"@{self.name}{'' if self.layer is None else self.layer}"

    @property
    def w_sized(self) -> bool:
        return self.name == "w" or self.layer is not None

    def attrs(self) -> dict[str, Any]:
        return {"space": self.name, "layer": self.layer}

    def dim(self, z_dim: int | None, w_dim: int | None, num_ws: int | None) -> int:
        """The size of a code of this space for a generator (or store) of these sizes."""
        if self.name == "z":
            return int(z_dim)
        if self.w_sized:
            return int(w_dim)
        return int(num_ws) * int(w_dim)

    def check_layers(self, num_ws: int) -> None:
        if self.layer is not None and not self.layer < num_ws:
            raise ValueError(f"layer must be in [0, {num_ws}) for these wp codes; got {self.layer}")

    def from_ws(self, ws: np.ndarray) -> np.ndarray:
        """(S, L, w_dim) per-layer codes -> (S, D) codes of this space (w or wp only)."""
        if self.name == "z":
            raise ValueError("z codes cannot be recovered from per-layer codes")
        if self.name == "w":
            return ws[:, 0]
        if self.layer is not None:
            return np.ascontiguousarray(ws[:, self.layer])
        return ws.reshape(ws.shape[0], -1)


def spaces_for(generator: Any, requested: Sequence[str] | None) -> list[str]:
    """The spaces a sampling run stores: validated against the generator (default z, plus w when it maps)."""
    if requested is None or len(requested) == 0:
        return ["z", "w"] if generator.has_mapping else ["z"]
    spaces = list(dict.fromkeys(["z", *requested]))
    unknown = [s for s in spaces if s not in SPACES]
    if unknown:
        raise ValueError(f"spaces must be z, w or wp; got {unknown}")
    if not generator.has_mapping and ("w" in spaces or "wp" in spaces):
        raise ValueError(f"generator {getattr(generator, 'spec', generator)!r} has no mapping network: "
                         "only the 'z' space exists")
    return spaces


def default_space(store: Store) -> str:
    """w when the store has it (the better-behaved space for most generators), else z."""
    return "w" if "w" in store.spaces else "z"


def resolve_array(store: Store, array: str | None) -> tuple[str, str]:
    """(array path, space) for an ``array`` argument ('latents/w', 'w', ...); default w when stored, else z."""
    if array is None:
        space = default_space(store)
        return f"latents/{space}", space
    path = array if array.startswith("latents/") else f"latents/{array}"
    space = path.split("/", 1)[1]
    if space not in store.spaces:
        raise StoreError(f"{store.path} has no array {path!r}; it stores "
                         f"{', '.join('latents/' + s for s in store.spaces)}")
    return path, space


class LatentView:
    """A store's rows of one space as (n, dim) matrices: z, w, wp flattened to (n, L·d), or one wp layer."""

    def __init__(self, store: Store, space: "str | LatentSpace", layer: int | None = None):
        self.space_of = LatentSpace.of(space, layer)
        self.array = store.latent_array(self.space_of.name)
        self.store = store
        self.space = self.space_of.name
        self.layer = self.space_of.layer
        shape = self.array.shape
        if self.layer is not None:
            self.space_of.check_layers(shape[1])
        self.dim = int(shape[-1]) if self.space != "wp" or self.layer is not None else int(shape[1] * shape[2])
        self.rows_per_chunk = int(self.array.chunks[0])
        self.n = int(shape[0])

    def read(self, rows: slice) -> np.ndarray:
        if self.layer is not None:
            return np.asarray(self.array[rows, self.layer])
        values = np.asarray(self.array[rows])
        return values.reshape(values.shape[0], -1) if self.space == "wp" else values

    def blocks(self, block_chunks: int = 1) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream the rows in blocks of whole storage chunks: (rows, (b, dim) float32), reads ahead."""
        step = self.rows_per_chunk * block_chunks
        yield from read_ahead((slice(start, min(start + step, self.n)) for start in range(0, self.n, step)),
                              self.read)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats allowed) as (len(index), dim), reading each chunk once."""
        return self.gather_many([index])[0]

    def gather_many(self, indexes: Sequence[np.ndarray],
                    on_chunk: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """``[gather(i) for i in indexes]`` in one pass: each storage chunk holding any wanted row is read once.

        ``on_chunk(rows)`` is called after each chunk read (rows = the chunk's row count), e.g. a bar's update.
        The rows go straight into the outputs, with no intermediate copy of the selection.
        """
        import torch  # row copies through torch: numpy's fancy indexing into fresh memory was slower

        flat = [np.asarray(i, dtype=np.int64).ravel() for i in indexes]
        outs = [np.empty((i.size, self.dim), np.float32) for i in flat]
        rows = np.concatenate(flat) if flat else np.empty(0, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"row index out of range [0, {self.n}) in gather")
        owner = np.repeat(np.arange(len(flat)), [i.size for i in flat])
        position = np.concatenate([np.arange(i.size) for i in flat]) if flat else rows
        order = np.argsort(rows, kind="stable")
        rows, owner, position = rows[order], owner[order], position[order]
        chunk_of = rows // self.rows_per_chunk
        starts = np.r_[0, np.flatnonzero(np.diff(chunk_of)) + 1] if rows.size else np.empty(0, np.int64)
        bounds = list(zip(starts.tolist(), np.r_[starts[1:], rows.size].tolist()))
        spans = (slice(int(chunk_of[lo]) * self.rows_per_chunk,
                       min((int(chunk_of[lo]) + 1) * self.rows_per_chunk, self.n)) for lo, _ in bounds)
        targets = [torch.from_numpy(o) for o in outs]
        for (lo, hi), (span, block) in zip(bounds, read_ahead(spans, self.read)):
            source = torch.from_numpy(block)
            for k in np.unique(owner[lo:hi]).tolist():
                mine = lo + np.flatnonzero(owner[lo:hi] == k)
                local = torch.from_numpy(rows[mine] - span.start)
                targets[k].index_copy_(0, torch.from_numpy(position[mine]), source.index_select(0, local))
            if on_chunk is not None:
                on_chunk(span.stop - span.start)
        return [o.reshape(*np.shape(i), self.dim) for o, i in zip(outs, indexes)]

    @property
    def label(self) -> str:
        return self.space_of.label


def codes_from_z(G: Any, z: np.ndarray, space: LatentSpace, device: Any = "cpu",
                 labels: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    """z codes (S, z_dim) -> ((S, D) codes of ``space`` as float64, (S, L, w_dim) per-layer codes or None).

    w is the mapping output before truncation (``engine.models.base.mapped_w``); wp the per-layer codes the
    synthesis takes. ``labels`` (S,): the codes' classes, for a class-conditional generator.
    """
    import torch

    from engine.models.base import map_codes, mapped_w

    if space.name == "z":
        return z.astype(np.float64), None
    with torch.inference_mode():
        zt = torch.from_numpy(np.ascontiguousarray(z, np.float32)).to(device)
        lt = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64)).to(device)
        wst = map_codes(G, zt, lt)
        ws = wst.float().cpu().numpy()
        if space.name == "w":
            return mapped_w(G, zt, wst, lt).double().cpu().numpy(), ws
    return space.from_ws(ws).astype(np.float64), ws


def parse_layers(text: "str | Sequence[int] | None", num_ws: int) -> tuple[int, int] | None:
    """'A-B' or 'A' (inclusive, 0-based) -> (A, B) checked against ``num_ws``; None keeps every layer."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", text)
        if not match:
            raise ValueError(f"layers must be 'A' or 'A-B' (0-based, inclusive); got {text!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    else:
        first, last = (int(v) for v in text)
    if not 0 <= first <= last < num_ws:
        raise ValueError(f"layers {first}-{last} must lie in 0-{num_ws - 1} (the generator has {num_ws})")
    return first, last


def synthesis_input(G: Any, codes: Any, space: LatentSpace, base_ws: Any = None,
                    layers: tuple[int, int] | None = None, labels: Any = None) -> Any:
    """Per-layer codes (B, num_ws, w_dim) for the synthesis from (B, D) codes of ``space`` (torch tensors).

    ``base_ws`` (B, num_ws, w_dim): the unedited per-layer codes, needed where only part of them changes (one
    wp layer, or ``layers``, a range a w-sized code is applied to); the other layers keep theirs. ``labels``
    (B,): the codes' classes, for a class-conditional generator mapping z codes.
    """
    if layers is not None and not space.w_sized:
        raise ValueError(f"layers applies to w-sized codes (w or one wp layer); {space.label} codes span "
                         "their own layers")
    if space.name == "z":
        from engine.models.base import map_codes

        return map_codes(G, codes, labels)
    if space.name == "wp" and space.layer is None:
        return codes.reshape(-1, G.num_ws, G.w_dim)
    if space.name == "w":
        truncate = getattr(G, "truncate", None)    # w is stored before truncation: apply it as mapping did
        per_layer = truncate(codes) if callable(truncate) else codes[:, None, :].expand(-1, G.num_ws, -1)
        if layers is None:
            return per_layer
    else:
        per_layer = codes[:, None, :].expand(-1, G.num_ws, -1)    # one wp layer's code, already as synthesized
    first, last = layers if layers is not None else (space.layer, space.layer)
    if base_ws is None:
        raise ValueError("editing part of the layers needs the unedited per-layer codes (base_ws)")
    ws = base_ws.clone()
    ws[:, first:last + 1] = per_layer[:, first:last + 1]
    return ws
