"""Tile choice of the Triton path: the ~100 KB cards get tiles that fit them, and a tile the GPU
refuses (Triton's OutOfResources, raised before the kernel runs) steps down to one that fits
instead of failing the call. tests/test_triton_compile.py checks the shared memory of every
chosen tile on every arch with Triton's compiler."""
import pytest

from sageattention.triton import forward
from sageattention.triton.forward import OutOfResources, TileConfig, launch_fitting, tile_config


def test_small_shared_memory_cards_get_the_smaller_fp16_tile():
    big = tile_config(128, False, False)
    small = tile_config(128, False, False, forward.SMALL_SMEM_PER_BLOCK)
    assert (big.block_m, big.block_n) == (128, 128)
    assert (small.block_m, small.block_n) == (128, 64)
    # The H100/H200 and the A100 keep the tuned table.
    assert tile_config(128, False, False, 232448) == big == tile_config(128, False, False, 166912)


def test_masked_fp8_calls_keep_two_blocks_per_sm_on_the_big_gpus():
    assert tile_config(128, True, False, 232448, masked=True).num_stages == 2
    assert tile_config(128, True, False, 232448) == tile_config(128, True, False)
    small = tile_config(128, True, False, forward.SMALL_SMEM_PER_BLOCK, masked=True)
    assert small == tile_config(128, True, False)  # not measured there: the tuned tile


def test_smaller_tile_steps_down_to_a_floor():
    seen = [TileConfig(128, 128, 8, 3)]
    while (nxt := forward.smaller_tile(seen[-1])) is not None:
        seen.append(nxt)
    assert [(c.block_m, c.block_n, c.num_stages) for c in seen] == [
        (128, 128, 3), (128, 128, 2), (128, 64, 2), (128, 32, 2), (64, 32, 2)]
    assert seen[-1].num_warps == 4


def _oor():
    try:
        return OutOfResources(120000, 101376, "shared memory")
    except TypeError:  # older signatures
        return OutOfResources()


def test_a_refused_tile_falls_back_and_is_remembered():
    tried = []

    def launch(cfg):
        tried.append(cfg)
        if cfg.num_stages > 2 or cfg.block_n > 64:
            raise _oor()

    kind = ("test", 1)
    first = TileConfig(128, 128, 8, 3)
    ran = launch_fitting(launch, first, kind)
    assert ran == TileConfig(128, 64, 8, 2) and len(tried) == 3
    tried.clear()
    assert launch_fitting(launch, first, kind) == ran and tried == [ran]  # no retries later


def test_nothing_fits_is_one_clear_error():
    def launch(cfg):
        raise _oor()

    with pytest.raises(RuntimeError, match="no Triton tile fits this GPU"):
        launch_fitting(launch, TileConfig(64, 64, 4, 2), ("test", 2))


def test_other_errors_are_not_swallowed():
    def launch(cfg):
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        launch_fitting(launch, TileConfig(128, 128, 8, 3), ("test", 3))
