"""engine.spaces: the one place that chooses, reads and edits z / w / wp / a layer / a layer range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine.methods._common import writing
from engine.sampler import draw_codes
from engine.spaces import LatentSpace, LatentView, codes_from_z, parse_layers, resolve_array, synthesis_input
from tests.models_for_tests import truncating_generator


def test_spaces_parse_name_and_say_their_space():
    assert LatentSpace.of("wp[4]") == LatentSpace.of("wp", 4) == LatentSpace.from_attrs({"space": "wp", "layer": 4})
    assert [LatentSpace.of(s).suffix for s in ("z", "w", "wp", "wp[4]")] == ["", "@w", "@wp", "@wp4"]
    assert LatentSpace.of("wp", 4).label == "wp[4]" and LatentSpace.of("wp", 4).w_sized
    assert LatentSpace("wp").dim(512, 256, 14) == 14 * 256 and LatentSpace("z").dim(512, 256, 14) == 512
    with pytest.raises(ValueError, match="does not apply to 'w'"):
        LatentSpace("w", 1)
    with pytest.raises(ValueError, match="space must be z, w or wp"):
        LatentSpace.of("s")
    assert parse_layers("0-3", 14) == (0, 3) and parse_layers("5", 14) == (5, 5) and parse_layers(None, 14) is None
    with pytest.raises(ValueError, match="must lie in 0-13"):
        parse_layers("3-14", 14)


def test_synthesis_inputs_change_only_the_layers_a_space_owns():
    G = truncating_generator()
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    ws = G.mapping(z)
    w = G.mapping_w(z)
    # w codes are stored before truncation; the synthesis gets them truncated again, as sampled.
    torch.testing.assert_close(synthesis_input(G, w, LatentSpace("w")), ws)
    torch.testing.assert_close(synthesis_input(G, ws.reshape(3, -1), LatentSpace("wp")), ws)
    torch.testing.assert_close(synthesis_input(G, z, LatentSpace("z")), ws)
    moved = torch.full((3, 8), 9.0)
    one = synthesis_input(G, moved, LatentSpace("wp", 2), base_ws=ws)
    assert torch.equal(one[:, 2], moved) and torch.equal(one[:, [0, 1, 3]], ws[:, [0, 1, 3]])
    ranged = synthesis_input(G, moved, LatentSpace("w"), base_ws=ws, layers=(1, 2))
    assert torch.equal(ranged[:, 1:3], G.truncate(moved)[:, 1:3]) and torch.equal(ranged[:, [0, 3]], ws[:, [0, 3]])
    # Unedited w on truncated layers gives back exactly the sampled per-layer codes.
    torch.testing.assert_close(synthesis_input(G, w, LatentSpace("w"), base_ws=ws, layers=(0, 1)), ws)
    with pytest.raises(ValueError, match="w-sized"):
        synthesis_input(G, ws.reshape(3, -1), LatentSpace("wp"), base_ws=ws, layers=(0, 1))


def test_codes_from_z_match_the_stored_codes_of_every_space(tmp_path):
    store = engine.sample(str(tmp_path / "s.zarr"), "tests.models_for_tests:truncating_generator", n=40, chunk=20,
                          seed=4, spaces=["z", "w", "wp"], progress=False)
    G = truncating_generator()
    z = store.array("latents/z")[:]
    for space in (LatentSpace("z"), LatentSpace("w"), LatentSpace("wp"), LatentSpace("wp", 1)):
        codes, _ = codes_from_z(G, z, space)
        np.testing.assert_allclose(codes, LatentView(store, space).read(slice(0, 40)), atol=1e-6,
                                   err_msg=space.label)
        assert LatentView(store, space).dim == codes.shape[1]
    assert resolve_array(store, None) == ("latents/w", "w") and resolve_array(store, "wp") == ("latents/wp", "wp")


def test_edit_moves_a_w_direction_on_a_range_of_layers_only(tmp_path):
    from engine.methods.editing import edit

    store = engine.sample(str(tmp_path / "s.zarr"), "tests.models_for_tests:truncating_generator", n=40, chunk=20,
                          seed=4, spaces=["z", "w"], progress=False)
    with writing(store.path, "test") as target:
        target.write_direction("test", "d", np.eye(8, dtype=np.float32)[:1], {"space": "w"})
    G = truncating_generator()
    whole = edit(store.path, "test/d", alphas="0,2,2", units="raw", samples=3, generator=G)
    ranged = edit(store.path, "test/d", alphas="0,2,2", units="raw", samples=3, generator=G, layers="2-3")
    truncated = edit(store.path, "test/d", alphas="0,2,2", units="raw", samples=3, generator=G, layers="0-1")
    torch.testing.assert_close(truncated["images"][:, 0], whole["images"][:, 0])     # α = 0 is the sample itself
    assert ranged["layers"] == [2, 3] and whole["layers"] is None
    # At α = 0 both are the unedited image; at α = 2 only layers 2-3 carry w + 2n, layers 0-1 keep their codes.
    torch.testing.assert_close(ranged["images"][:, 0], whole["images"][:, 0])
    z = torch.from_numpy(draw_codes(0, 0, 3, 8))
    with torch.no_grad():
        ws = G.mapping(z)
        ws[:, 2:4] = G.mapping_w(z)[:, None] + 2 * torch.eye(8)[0]
        torch.testing.assert_close(ranged["images"][:, 1], G.synthesis(ws), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(whole["images"][:, 1], G.synthesis(G.truncate(G.mapping_w(z) + 2 * torch.eye(8)[0])),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must lie in 0-3"):
        edit(store.path, "test/d", samples=1, generator=G, layers="2-4")
