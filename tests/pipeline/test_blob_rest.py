"""shared.blob_rest sends List Blobs and Put Blob itself: they must do what the SDK does."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.blob_rest import chunks, get, listing, put

NAMES = ["a.txt", "tasks/t000001/out.csv", "tasks/t000001/sub dir/x y.bin", "tasks/t000002/été ☃.txt",
         "tasks/t000002/100%.txt", "tasks/t000002/a&b<c>.txt", "tasks/t000003/'quote\".txt", "z/" + "n" * 200]


@pytest.fixture
def container(ctx):
    client = ctx.blobs.create_container("listing-test")
    for k, name in enumerate(NAMES):
        client.upload_blob(name, b"x" * k)
    yield client
    client.delete_container()


@pytest.mark.parametrize("page", [1, 3, 5000])
def test_the_listing_is_the_sdks_listing_page_after_page(container, page):
    for prefix in ("", "tasks/", "tasks/t000002/", "nothing/"):
        expected = [(b.name, b.size, b.etag) for b in container.list_blobs(name_starts_with=prefix)]
        got = [(b.name, b.size, b.etag) for b in listing(container, prefix, page=page)]
        assert got == expected
    assert [b.size for b in listing(container, page=page)] == [NAMES.index(b.name) for b in listing(container)]


def test_a_missing_container_raises_not_found(ctx):
    with pytest.raises(ResourceNotFoundError):
        list(listing(ctx.blobs.get_container_client("no-such-container")))


def test_put_writes_what_the_sdk_reads_back_and_replaces_in_place(container):
    for k, name in enumerate(NAMES):
        put(container, "put/" + name, f"data {k}".encode())
    for k, name in enumerate(NAMES):
        assert container.download_blob("put/" + name).readall() == f"data {k}".encode()
        props = container.get_blob_client("put/" + name).get_blob_properties()
        assert props.blob_type == "BlockBlob"
    put(container, "put/a.txt", b"again")
    assert container.download_blob("put/a.txt").readall() == b"again"
    put(container, "put/empty", b"")
    assert container.download_blob("put/empty").readall() == b""


def test_put_into_a_missing_container_raises_not_found(ctx):
    with pytest.raises(ResourceNotFoundError):
        put(ctx.blobs.get_container_client("no-such-container"), "x", b"x")


def test_conditional_puts_and_get_with_etags_the_sdk_agrees_with(ctx, container):
    first = put(container, "doc.json", b"{}", "application/json", if_none_match="*")
    assert first == container.get_blob_client("doc.json").get_blob_properties().etag
    with pytest.raises(ResourceExistsError):
        put(container, "doc.json", b"{}", if_none_match="*")
    assert get(container, "doc.json") == (b"{}", first)
    second = put(container, "doc.json", b'{"a": 1}', if_match=first)
    assert second != first and get(container, "doc.json") == (b'{"a": 1}', second)
    with pytest.raises(ResourceModifiedError):
        put(container, "doc.json", b"{}", if_match=first)  # someone wrote since
    with pytest.raises((ResourceModifiedError, ResourceNotFoundError)):  # Azurite: 412, as for a changed blob
        put(container, "never.json", b"{}", if_match=first)
    assert container.get_blob_client("doc.json").get_blob_properties().content_settings.content_type == \
        "application/octet-stream"
    assert get(container, "missing.json") is None
    assert get(ctx.blobs.get_container_client("no-such-container"), "x") is None


def test_chunks_read_a_blob_range_by_range_pinned_to_its_first_version(container):
    data = bytes(range(256)) * 3
    put(container, "big.bin", data)
    assert b"".join(chunks(container, "big.bin", 100)) == data
    assert [len(c) for c in chunks(container, "big.bin", 500)] == [500, 268]
    put(container, "empty.bin", b"")
    assert list(chunks(container, "empty.bin", 100)) == []
    stream = chunks(container, "big.bin", 100)
    assert next(stream) == data[:100]
    put(container, "big.bin", b"replaced meanwhile" * 50)
    with pytest.raises(ResourceModifiedError):
        next(stream)
    with pytest.raises(ResourceNotFoundError):
        chunks(container, "missing.bin", 100)
