"""GPUs per VM size (shared/gpus.py): the count a task is told, and the sizes refused rather than guessed."""
import pytest

from shared.gpus import UnknownGpuSize, gpu_count, is_gpu_size, known_sizes


@pytest.mark.parametrize("size, gpus", [
    ("Standard_NC6s_v3", 1), ("standard_nc24rs_v3", 4), ("NC4as_T4_v3", 1), ("Standard_NC64as_T4_v3", 4),
    ("Standard_NC96ads_A100_v4", 4), ("Standard_ND96asr_v4", 8), ("Standard_ND40rs_v2", 8),
    ("Standard_NV36ads_A10_v5", 1), ("Standard_NV6ads_A10_v5", 1), ("Standard_NV72ads_A10_v5", 2),
    ("  Standard_NC12  ", 2),
])
def test_known_nvidia_sizes_count_their_gpus(size, gpus):
    assert gpu_count(size) == gpus and is_gpu_size(size)


@pytest.mark.parametrize("size", ["standard_d2s_v3", "Standard_F72s_v2", "Standard_E64s_v5", "Standard_NP10s",
                                  "Basic_A1", "Standard_B2ms"])
def test_sizes_without_gpus_count_zero(size):
    assert gpu_count(size) == 0 and not is_gpu_size(size)


def test_an_unknown_n_series_size_is_refused_not_guessed():
    with pytest.raises(UnknownGpuSize, match="does not know"):
        gpu_count("Standard_NC7x_v9")


@pytest.mark.parametrize("size", ["Standard_NV32as_v4", "Standard_NG32ads_V620_v1", "Standard_ND96isr_MI300X_v5"])
def test_amd_sizes_are_refused(size):
    with pytest.raises(UnknownGpuSize, match="AMD"):
        gpu_count(size)


def test_the_table_is_lower_case_and_whole():
    sizes = known_sizes()
    assert sizes == sorted(s.lower() for s in sizes) and all(gpu_count(s) >= 1 for s in sizes)
