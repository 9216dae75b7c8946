import io
import stat
import zipfile

import pytest

from fairskin.datasets import ArchiveError, read_member, safe_zip_members

LIMITS = {"max_total_bytes": 50_000_000, "max_members": 100}


def _zip(*members: tuple[str | zipfile.ZipInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_members_are_keyed_by_base_name_and_directories_skipped():
    buffer = _zip(("ddi/", b""), ("ddi/images/000001.png", b"png"), ("000002.png", b"x"))
    members = safe_zip_members(buffer, **LIMITS)
    assert set(members) == {"000001.png", "000002.png"}
    assert members["000001.png"].filename == "ddi/images/000001.png"


def test_macos_resource_forks_are_ignored():
    buffer = _zip(("a.jpg", b"1"), ("__MACOSX/._a.jpg", b"fork"))
    assert set(safe_zip_members(buffer, **LIMITS)) == {"a.jpg"}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil.jpg", "'..'"),
        ("images/../../evil.jpg", "'..'"),
        ("/etc/cron.d/evil", "absolute path"),
        ("..\\evil.jpg", "backslash"),
        ("images\\evil.jpg", "backslash"),
        ("C:/Windows/evil.jpg", "drive letter"),
        ("d:evil.jpg", "drive letter"),
    ],
)
def test_traversal_names_are_refused_naming_the_member(name, problem):
    buffer = _zip(("ok.jpg", b"1"), (name, b"2"))
    with pytest.raises(ArchiveError, match=problem) as caught:
        safe_zip_members(buffer, **LIMITS)
    assert caught.value.member == name
    assert repr(name) in str(caught.value)


def test_symlink_member_is_refused():
    link = zipfile.ZipInfo("images/a.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = _zip((link, b"/etc/passwd"))
    with pytest.raises(ArchiveError, match="symbolic link") as caught:
        safe_zip_members(buffer, **LIMITS)
    assert caught.value.member == "images/a.jpg"


def test_regular_unix_file_mode_is_accepted():
    info = zipfile.ZipInfo("a.jpg")
    info.create_system = 3
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    assert set(safe_zip_members(_zip((info, b"x")), **LIMITS)) == {"a.jpg"}


def test_zip_bomb_ratio_is_refused():
    buffer = _zip(("small.jpg", b"x" * 100), ("bomb.jpg", bytes(20_000_000)))
    with pytest.raises(ArchiveError, match="compression ratio") as caught:
        safe_zip_members(buffer, **LIMITS)
    assert caught.value.member == "bomb.jpg"


def test_total_uncompressed_size_cap_names_the_member_that_passes_it():
    buffer = _zip(("a.jpg", bytes(600)), ("b.jpg", bytes(600)))
    with pytest.raises(ArchiveError, match="limit of 1000 bytes") as caught:
        safe_zip_members(buffer, max_total_bytes=1000, max_members=10)
    assert caught.value.member == "b.jpg"


def test_too_many_members():
    buffer = _zip(*((f"{n}.jpg", b"x") for n in range(6)))
    with pytest.raises(ArchiveError, match="6 members, more than the limit of 5") as caught:
        safe_zip_members(buffer, max_total_bytes=10_000, max_members=5)
    assert caught.value.member == "5.jpg"


def test_two_members_with_the_same_base_name_are_ambiguous():
    buffer = _zip(("train/a.jpg", b"1"), ("test/a.jpg", b"2"))
    with pytest.raises(ArchiveError, match="'train/a.jpg'") as caught:
        safe_zip_members(buffer, **LIMITS)
    assert caught.value.member == "test/a.jpg"


def test_not_a_zip():
    with pytest.raises(ArchiveError, match="not a readable zip"):
        safe_zip_members(io.BytesIO(b"PK not really"), **LIMITS)


def test_accepts_a_path_and_an_open_zipfile(tmp_path):
    path = tmp_path / "images.zip"
    path.write_bytes(_zip(("a.jpg", b"1")).getvalue())
    assert set(safe_zip_members(path, **LIMITS)) == {"a.jpg"}
    with zipfile.ZipFile(path) as archive:
        assert set(safe_zip_members(archive, **LIMITS)) == {"a.jpg"}
        # The caller's archive stays open for reading afterwards.
        assert archive.read("a.jpg") == b"1"


def test_read_member_returns_bytes_within_the_cap():
    buffer = _zip(("a.jpg", b"jpeg bytes"))
    with zipfile.ZipFile(buffer) as archive:
        members = safe_zip_members(archive, **LIMITS)
        assert read_member(archive, members["a.jpg"], max_bytes=10) == b"jpeg bytes"
        with pytest.raises(ArchiveError, match="limit of 9") as caught:
            read_member(archive, members["a.jpg"], max_bytes=9)
        assert caught.value.member == "a.jpg"


def test_read_member_refuses_a_member_whose_size_field_lies():
    buffer = _zip(("a.jpg", bytes(200_000)))
    with zipfile.ZipFile(buffer) as archive:
        info = archive.getinfo("a.jpg")
        info.file_size = 10  # a forged central directory entry
        # zipfile stops at the declared size and then fails the CRC check.
        with pytest.raises(ArchiveError, match="'a.jpg': cannot be read"):
            read_member(archive, info, max_bytes=100_000)


def test_read_member_reports_corrupt_data():
    raw = bytearray(_zip(("a.jpg", b"hello world" * 50)).getvalue())
    start = raw.index(b"a.jpg") + len(b"a.jpg")
    raw[start + 2] ^= 0xFF
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        with pytest.raises(ArchiveError, match="cannot be read"):
            read_member(archive, archive.getinfo("a.jpg"), max_bytes=10_000)


def test_device_or_fifo_member_is_refused():
    fifo = zipfile.ZipInfo("a.jpg")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    with pytest.raises(ArchiveError, match="not a regular file"):
        safe_zip_members(_zip((fifo, b"")), **LIMITS)
