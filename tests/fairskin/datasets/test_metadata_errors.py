import io

import pytest

from fairskin.datasets import MetadataError, parse_metadata

F17K_HEADER = (
    "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,"
    "three_partition_label,qc,url,url_alphanum"
)
DDI_HEADER = ",DDI_ID,DDI_file,skin_tone,malignant,disease"
HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"


def _md5(n: int) -> str:
    return f"{n:032x}"


def _f17k_row(n: int, fst: str = "2", centaur: str = "2", qc: str = "") -> str:
    return f"{_md5(n)},{fst},{centaur},melanoma,malignant melanoma,malignant,{qc},http://u,u"


def _f17k(*rows: str) -> bytes:
    return "\n".join([F17K_HEADER, *rows, ""]).encode()


def _parse(fmt: str, data: bytes):
    return parse_metadata(fmt, data, file_name="meta.csv")


def _error(fmt: str, data: bytes) -> MetadataError:
    with pytest.raises(MetadataError) as caught:
        _parse(fmt, data)
    return caught.value


def test_valid_minimal_file_parses():
    result = _parse("fitzpatrick17k", _f17k(_f17k_row(1), _f17k_row(2, fst="-1")))
    assert [r.fst for r in result.records][1] is None
    assert len(result.records) == 2


@pytest.mark.parametrize("fst", ["7", "0", "2.5", "abc", "", "-2"])
def test_fitzpatrick_scale_out_of_range_or_not_integer(fst):
    error = _error("fitzpatrick17k", _f17k(_f17k_row(1), _f17k_row(2, fst=fst)))
    assert error.row_number == 2
    assert error.file_name == "meta.csv"
    assert str(error).startswith("meta.csv, data row 2 (line 3): fitzpatrick_scale")
    assert repr(fst) in str(error)


def test_fitzpatrick_centaur_is_validated_too():
    error = _error("fitzpatrick17k", _f17k(_f17k_row(1, centaur="9")))
    assert error.row_number == 1 and "fitzpatrick_centaur" in str(error)


def test_md5hash_that_is_not_a_hash_is_refused():
    row = _f17k_row(1).replace(_md5(1), "../../etc/passwd")
    error = _error("fitzpatrick17k", _f17k(row))
    assert error.row_number == 1 and "md5hash" in str(error)


def test_row_with_an_extra_field_is_an_error_not_truncated():
    error = _error("fitzpatrick17k", _f17k(_f17k_row(1), _f17k_row(2) + ",surplus"))
    assert error.row_number == 2
    assert "has 10 fields but the header has 9" in str(error)


def test_row_with_a_missing_field_is_an_error_not_padded():
    short = _f17k_row(2).rsplit(",", 1)[0]
    error = _error("fitzpatrick17k", _f17k(_f17k_row(1), short))
    assert error.row_number == 2
    assert "has 8 fields" in str(error)


def test_duplicate_source_id_names_both_rows():
    data = _f17k(_f17k_row(1), _f17k_row(2), _f17k_row(1, fst="4"))
    error = _error("fitzpatrick17k", data)
    assert error.row_number == 3
    assert f"duplicate source id '{_md5(1)}': data rows 1 and 3" in str(error)


def test_an_excluded_row_still_claims_its_id():
    data = _f17k(_f17k_row(1, qc="3 Wrongly labelled"), _f17k_row(1))
    assert "data rows 1 and 2" in str(_error("fitzpatrick17k", data))


def test_parser_stops_at_the_first_error():
    data = _f17k(_f17k_row(1), _f17k_row(2, fst="9"), _f17k_row(3, centaur="x"), _f17k_row(1))
    assert _error("fitzpatrick17k", data).row_number == 2


def test_duplicate_before_a_later_bad_row_is_reported_first():
    data = _f17k(_f17k_row(1), _f17k_row(1), _f17k_row(3, fst="9"))
    error = _error("fitzpatrick17k", data)
    assert error.row_number == 2 and "duplicate" in str(error)


def test_unrecognised_layout_names_missing_columns_per_variant():
    error = _error("fitzpatrick17k", b"md5hash,label,qc\nx,y,z\n")
    assert error.row_number is None
    message = str(error)
    assert message.startswith("meta.csv: header: not a Fitzpatrick17k metadata file")
    assert "fitzpatrick17k-current layout is missing 'fitzpatrick_scale'" in message
    assert "fitzpatrick17k-older layout is missing (unnamed index), 'fitzpatrick'" in message


def test_wrong_format_choice_is_a_header_error():
    error = _error("ddi", f"{HAM_HEADER}\nHAM_1,ISIC_1,nv,histo,40,male,back\n".encode())
    assert error.row_number is None
    assert "not a DDI metadata file" in str(error) and "'DDI_ID'" in str(error)


def test_repeated_column_name_is_a_header_error():
    error = _error("csv", b"file,diagnosis,file\na,NV,b\n")
    assert "repeated" in str(error) and error.row_number is None


@pytest.mark.parametrize("data", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_empty_file(data):
    error = _error("ham10000", data)
    assert str(error) == "meta.csv: file is empty"


def test_header_without_rows():
    assert "no data rows" in str(_error("ham10000", f"{HAM_HEADER}\n".encode()))


def test_non_utf8_byte_names_the_row():
    bad_row = _f17k_row(2).replace("melanoma", "m\xe9lanoma", 1).encode("latin-1")
    data = _f17k(_f17k_row(1)) + bad_row + b"\n"
    error = _error("fitzpatrick17k", data)
    assert error.row_number == 2 and error.line_number == 3
    assert "not UTF-8" in str(error) and "0xe9" in str(error)


def test_non_utf8_in_the_header_has_no_row():
    error = _error("csv", b"file,diagn\xffosis\na.jpg,NV\n")
    assert error.row_number is None and error.line_number == 1


def test_non_utf8_after_a_multiline_quoted_field_counts_records_not_lines():
    data = b'file,diagnosis,note\na.jpg,NV,"two\nlines"\nb.jpg,NV,caf\xe9\n'
    error = _error("csv", data)
    assert (error.row_number, error.line_number) == (2, 4)


def test_bad_quoting_is_an_error_with_its_row():
    error = _error("csv", b'file,diagnosis\na.jpg,NV\n"b.jpg"x,NV\n')
    assert error.row_number == 2 and "not valid CSV" in str(error)


def test_nul_byte_is_an_error_with_its_row():
    error = _error("csv", b"file,diagnosis\na.jpg,NV\nb\x00.jpg,NV\n")
    assert error.row_number == 2


@pytest.mark.parametrize("tone", ["23", "5", "", "I-II"])
def test_invalid_ddi_skin_tone(tone):
    data = f"{DDI_HEADER}\n0,1,000001.png,12,TRUE,melanoma\n1,2,000002.png,{tone},TRUE,x\n"
    error = _error("ddi", data.encode())
    assert error.row_number == 2 and "skin_tone must be one of 12, 34, 56" in str(error)


@pytest.mark.parametrize("value", ["yes", "", "1", "malignant"])
def test_invalid_ddi_malignant(value):
    data = f"{DDI_HEADER}\n0,1,000001.png,12,{value},melanoma\n"
    error = _error("ddi", data.encode())
    assert error.row_number == 1 and "malignant must be TRUE or FALSE" in str(error)


def test_ddi_without_index_column_and_lowercase_booleans():
    data = b"DDI_ID,DDI_file,skin_tone,malignant,disease\n1,000001.png,34,false,dermatofibroma\n"
    (record,) = _parse("ddi", data).records
    assert record.extra["malignant"] is False


def test_ddi_unsafe_file_name():
    data = f"{DDI_HEADER}\n0,1,../000001.png,12,TRUE,melanoma\n".encode()
    assert "unsafe file name" in str(_error("ddi", data))


def test_ddi_two_ids_sharing_one_image_file():
    data = f"{DDI_HEADER}\n0,1,a.png,12,TRUE,x\n1,2,a.png,34,FALSE,y\n".encode()
    error = _error("ddi", data)
    assert "duplicate image file name 'a.png': data rows 1 and 2" in str(error)


def test_unknown_ham_dx_code():
    data = f"{HAM_HEADER}\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_2,ISIC_2,scc,histo,,,\n"
    error = _error("ham10000", data.encode())
    assert error.row_number == 2
    assert "dx must be one of nv, mel, bkl, bcc, akiec, vasc, df, got 'scc'" in str(error)


@pytest.mark.parametrize("age", ["abc", "-5", "nan", "inf", "200"])
def test_invalid_ham_age(age):
    data = f"{HAM_HEADER}\nHAM_1,ISIC_1,nv,histo,{age},male,back\n"
    assert "age must be a number" in str(_error("ham10000", data.encode()))


def test_ham_needs_a_lesion_id():
    data = f"{HAM_HEADER}\n,ISIC_1,nv,histo,40,male,back\n"
    assert "lesion_id is empty" in str(_error("ham10000", data.encode()))


def test_streams_and_bom_are_accepted():
    data = b"\xef\xbb\xbffile,diagnosis\na.jpg,NV\n"
    from_bytes = _parse("csv", data)
    from_binary = parse_metadata("csv", io.BytesIO(data), file_name="x")
    from_text = parse_metadata("csv", io.StringIO(data.decode("utf-8-sig")), file_name="x")
    assert from_bytes.records == from_binary.records == from_text.records
    assert from_bytes.records[0].file_name == "a.jpg"


def test_undecodable_text_stream_is_a_metadata_error():
    stream = io.TextIOWrapper(io.BytesIO(b"file,diagnosis\n\xff,NV\n"), encoding="utf-8")
    with pytest.raises(MetadataError, match="not UTF-8"):
        parse_metadata("csv", stream, file_name="x")


def test_blank_lines_are_skipped_and_not_counted():
    error = _error("csv", b"file,diagnosis\n\na.jpg,NV\n\nb.jpg,XX\n")
    assert (error.row_number, error.line_number) == (2, 5)


def test_unknown_format_and_tier_are_programming_errors():
    with pytest.raises(ValueError, match="unknown metadata format"):
        _parse("isic", b"x")
    with pytest.raises(ValueError, match="tier"):
        parse_metadata("csv", b"file,diagnosis\na,NV\n", mapping="optional_broad", file_name="x")


def test_metadata_error_is_a_value_error():
    assert issubclass(MetadataError, ValueError)


def test_a_header_fitting_no_layout_is_echoed_only_in_part():
    header = ",".join(f"column_{i}_" + "x" * 100 for i in range(5000))
    with pytest.raises(MetadataError) as raised:
        parse_metadata("csv", f"{header}\n".encode() + b"a\n", file_name="wide.csv")
    text = str(raised.value)
    assert "generic layout is missing 'file', 'diagnosis'" in text
    assert "'column_0_" in text and "… 4988 more" in text and "column_12_" not in text
    assert len(text) < 1000


def test_many_repeated_column_names_are_named_only_in_part():
    names = [f"dup_{i}_" + "y" * 60 for i in range(1000)]
    header = ",".join(["file", "diagnosis", *names, *names])
    with pytest.raises(MetadataError) as raised:
        parse_metadata("csv", f"{header}\n".encode(), file_name="dups.csv")
    text = str(raised.value)
    assert "column names repeated: 'dup_0_" in text and "… 988 more" in text
    assert len(text) < 1000
