"""engine_mlx/safetensors_header.py against the safetensors and MLX libraries' own files."""

from __future__ import annotations

import numpy as np
import pytest


def test_header_read_from_a_file_the_safetensors_library_wrote(tmp_path):
    from safetensors.numpy import save_file

    from engine_mlx.safetensors_header import read_header

    path = tmp_path / "a.safetensors"
    save_file(
        {"b": np.zeros((2, 3), np.float16), "a": np.arange(4, dtype=np.int32)},
        str(path),
        metadata={"format": "mlx"},
    )
    header = read_header(path)
    entries = {t.name: (t.dtype, t.shape, t.end - t.begin) for t in header.tensors}
    assert entries == {"a": ("I32", (4,), 16), "b": ("F16", (2, 3), 12)}
    assert header.metadata == {"format": "mlx"}
    assert header.data_start + max(t.end for t in header.tensors) == path.stat().st_size


def test_encoded_header_and_data_load_in_mlx(tmp_path):
    import mlx.core as mx

    from engine_mlx.safetensors_header import encode_header, read_header

    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7, 8], np.int64)
    path = tmp_path / "w.safetensors"
    path.write_bytes(
        encode_header([("w.a", "F32", a.shape, a.nbytes), ("w.b", "I64", b.shape, b.nbytes)])
        + a.tobytes()
        + b.tobytes()
    )
    loaded = mx.load(str(path))
    assert np.array_equal(np.array(loaded["w.a"]), a) and np.array_equal(np.array(loaded["w.b"]), b)
    assert read_header(path).data_start % 8 == 0


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"[1, 2]", "not an object"),
        (b'{"x": {"dtype": "F32", "shape": [1]}}', "data_offsets"),
        (b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}', "not enough values"),
        (b"{", "Expecting"),
    ],
)
def test_malformed_header_says_why(raw, reason):
    from engine_mlx.safetensors_header import HeaderError, parse_header

    with pytest.raises(HeaderError, match=reason):
        parse_header(raw)


def test_a_length_beyond_the_file_or_the_limit_is_refused(tmp_path):
    from engine_mlx.safetensors_header import HeaderError, header_length, read_header

    path = tmp_path / "short.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(HeaderError, match="a header of 1000 bytes in a file of 10"):
        read_header(path)
    with pytest.raises(HeaderError, match="a header of 1000 bytes"):
        read_header(path, limit=100)
    with pytest.raises(HeaderError, match="shorter than 8 bytes"):
        header_length(b"\x01\x02")
