import base64
import io
import wave

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from openi2v.domain.inputs import (NOTES, UPLOAD_LIMITS, audio_format, check_audio, check_image, check_upload,
                                   parse_request)
from openi2v.errors import InvalidInput, PayloadTooLarge
from tests import pictures

IMG = "https://example.com/a.png"


def rule(body) -> str:
    with pytest.raises(InvalidInput) as err:
        parse_request(body)
    return err.value.message


def test_defaults_and_string_durations():
    req = parse_request({"image": IMG, "prompt": "cat", "duration": "10", "unknown": 1, "loras": []})
    assert (req.duration, req.guidance_scale, req.negative_prompt) == (10, 0.5, "")
    assert 0 <= req.seed < 2**32


@pytest.mark.parametrize("body,message", [
    ({"prompt": "x"}, "image: is required"),
    ({"image": IMG}, "prompt: is required"),
    ({"image": IMG, "prompt": "   "}, "prompt: must not be empty"),
    ({"image": IMG, "prompt": "x" * 2501}, "prompt: must be at most 2500 characters (got 2501)"),
    ({"image": IMG, "prompt": "x", "negative_prompt": "y" * 2501}, "negative_prompt: must be at most 2500 characters (got 2501)"),
    ({"image": IMG, "prompt": "x", "guidance_scale": 5}, "guidance_scale: must be between 0 and 1 (got 5)"),
    ({"image": IMG, "prompt": "x", "guidance_scale": "0.5"}, "guidance_scale: must be a number between 0 and 1"),
    ({"image": IMG, "prompt": "x", "duration": 7}, "duration: must be 5 or 10 (got 7)"),
    ({"image": "file:///etc/passwd", "prompt": "x"}, "image: must be an http(s) URL or a data URI"),
    ([1, 2], "body: must be a JSON object"),
])
def test_each_rule_names_its_field(body, message):
    assert rule(body) == message


@pytest.mark.parametrize("seed, used, notes", [
    (7, 7, []),
    (7.0, 7, []),
    ("42", 42, ['seed: the string "42" was read as the integer 42']),
    (2**33 + 5, 5, ["seed: 8589934597 is outside 0 to 4294967295; 5 (the seed modulo 2**32) was used"]),
    (-5, 2**32 - 5, ["seed: -5 is outside 0 to 4294967295; 4294967291 (the seed modulo 2**32) was used"]),
    ("4294967297", 1, ['seed: the string "4294967297" was read as the integer 4294967297',
                       "seed: 4294967297 is outside 0 to 4294967295; 1 (the seed modulo 2**32) was used"]),
])
def test_a_seed_is_read_as_an_integer_in_range_with_a_note_when_coerced(seed, used, notes):
    req = parse_request({"image": IMG, "prompt": "x", "seed": seed})
    assert (req.seed, list(req.notes)) == (used, notes)
    assert req.to_json().get(NOTES) == (notes or None)  # stored with the inputs only when there are notes


@pytest.mark.parametrize("seed, shown", [("abc", '"abc"'), (True, "true"), (1.5, "1.5"), ([1], "[1]"),
                                         (float("nan"), "NaN"), ("x" * 50, '"' + "x" * 36 + "...")])
def test_a_seed_that_is_no_integer_is_ignored_for_a_random_one_with_a_note(seed, shown):
    req = parse_request({"image": IMG, "prompt": "x", "seed": seed})
    assert 0 <= req.seed < 2**32
    assert req.notes == (f"seed: {shown} is not an integer and was ignored; a random seed was used",)


@given(st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=12), st.booleans(),
                 st.lists(st.integers(), max_size=2)))
def test_no_seed_is_ever_refused(seed):
    """The hosted model ignores a seed, so none may make a request fail here."""
    req = parse_request({"image": IMG, "prompt": "x", "seed": seed})
    assert 0 <= req.seed <= 2**32 - 1
    plain = seed is None or (isinstance(seed, (int, float)) and not isinstance(seed, bool)
                             and seed == seed and float(seed).is_integer() and -1 <= seed < 2**32)
    assert bool(req.notes) is not plain


@pytest.mark.parametrize("audio", [5, "abc", "file:///etc/passwd", "http://[::1:9911/x", ["https://e.com/a.mp3"]])
def test_an_audio_that_is_no_url_is_ignored_with_a_note(audio):
    req = parse_request({"image": IMG, "prompt": "x", "audio": audio})
    assert req.audio is None and "audio" not in req.to_json()
    assert len(req.notes) == 1 and req.notes[0].startswith("audio: ")
    assert req.notes[0].endswith(" is not a valid http(s) URL or a data URI and was ignored")


def test_an_audio_url_or_data_uri_is_kept_without_a_note():
    for audio in ("https://example.com/a.mp3", "data:audio/wav;base64,AAAA"):
        req = parse_request({"image": IMG, "prompt": "x", "audio": audio})
        assert (req.audio, req.notes) == (audio, ())


PNG_HEAD, MP4_HEAD, WAV_HEAD = b"\x89PNG\r\n\x1a\n" + bytes(8), b"\0\0\0\x20ftypisom", b"RIFF\0\0\0\0WAVEfmt "


@pytest.mark.parametrize("head, kind, words", [(PNG_HEAD, "image", "an image"), (MP4_HEAD, "video", "a video"),
                                               (WAV_HEAD, "audio", "an audio file")])
def test_an_upload_is_held_to_its_types_limit_to_the_byte(head, kind, words):
    limit = UPLOAD_LIMITS[kind]
    check_upload(head, limit, 2**40)  # exactly the limit: taken
    with pytest.raises(PayloadTooLarge) as err:
        check_upload(head, limit + 1, 2**40)
    mb = limit // 2**20
    assert err.value.message == f"file: {words} must be at most {mb} MB ({limit:,} bytes; got {limit + 1:,})"


def test_an_upload_is_never_over_the_servers_cap_and_never_empty():
    with pytest.raises(PayloadTooLarge, match=r"^file: an image must be at most 1 MB \(1,048,576 bytes; got 1,048,577\)$"):
        check_upload(PNG_HEAD, 2**20 + 1, 2**20)  # the server's cap is below the type's limit
    with pytest.raises(PayloadTooLarge, match=r"^file: a file must be at most 50 MB \(52,428,800 bytes; got "):
        check_upload(b"GIF89a", 50 * 2**20 + 1, 50 * 2**20)  # a type not judged from the bytes: the cap alone
    check_upload(b"GIF89a", 50 * 2**20, 50 * 2**20)
    with pytest.raises(InvalidInput, match="^file: is empty$"):
        check_upload(b"", 0, 2**20)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_guidance_accepts_exactly_the_unit_interval(g):
    body = {"image": IMG, "prompt": "x", "guidance_scale": g}
    if 0 <= g <= 1:
        assert parse_request(body).guidance_scale == g
    else:
        assert rule(body).startswith("guidance_scale: ")


@given(st.one_of(st.integers(), st.text(max_size=4), st.floats(allow_nan=False), st.booleans()))
@example(5.0)
@example(10.0)
@example(" 10")
@example(7.5)
@example(True)
def test_duration_accepts_only_5_and_10(d):
    """5 or 10 as a number (5.0 too, as the hosted API takes it) or as a string, spaces around it aside."""
    body = {"image": IMG, "prompt": "x", "duration": d}
    whole = d.strip() if isinstance(d, str) else d
    if whole in (5, 10, "5", "10") and not isinstance(d, bool):
        assert parse_request(body).duration == int(whole)
    else:
        assert rule(body).startswith("duration: ")


@given(st.text(min_size=1, max_size=3000))
def test_prompt_length_rule(p):
    body = {"image": IMG, "prompt": p}
    if p.strip() and len(p) <= 2500:
        assert parse_request(body).prompt == p
    else:
        assert rule(body).startswith("prompt: ")


def image_rule(data: bytes) -> str:
    with pytest.raises(InvalidInput) as err:
        check_image("image", data)
    return err.value.message


@pytest.mark.parametrize("size,ok", [((300, 300), True), ((299, 400), False), ((750, 300), True),
                                      ((751, 300), False), ((300, 750), True), ((300, 751), False)])
def test_size_and_aspect_limits_are_inclusive(size, ok):
    data = pictures.encode(Image.new("RGB", size, (10, 20, 30)))
    if ok:
        assert check_image("image", data).size == size
    else:
        assert image_rule(data).startswith("image: ")


def test_format_is_judged_by_bytes_not_name():
    webp = pictures.encode(Image.new("RGB", (400, 400)), "WEBP")
    assert image_rule(webp) == "image: must be a JPEG or PNG image"
    assert image_rule(b"not an image at all") == "image: must be a JPEG or PNG image"
    assert check_image("image", pictures.encode(Image.new("RGB", (400, 400)), "JPEG")).mode == "RGB"


def test_truncated_file_and_oversize_file_are_rejected():
    data = pictures.png(640, 480)
    assert image_rule(data[: len(data) // 2]) == "image: is truncated or not a decodable image"
    assert image_rule(data + b"\0" * (10 * 2**20)).startswith("image: must be at most 10 MB")


def test_decompression_bomb_is_rejected_before_decoding():
    bomb = pictures.encode(Image.new("1", (20000, 20000)))  # tiny file, 400 megapixels
    assert len(bomb) < 10 * 2**20
    assert "too many pixels" in image_rule(bomb)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (600, 400), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = check_image("image", pictures.encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (400, 600)


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "I;16"])
def test_odd_modes_become_rgb(mode):
    img = Image.new("RGB", (320, 320), (200, 100, 50)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = Image.fromarray((np.full((320, 320), 40000)).astype(np.uint16))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = check_image("image", pictures.encode(img, fmt))
    assert out.mode == "RGB" and out.size == (320, 320)


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (320, 320), (0, 0, 0, 0))
    assert check_image("image", pictures.encode(img)).getpixel((5, 5)) == (255, 255, 255)


def test_audio_format_is_judged_by_bytes():
    assert audio_format("audio", b"RIFF\0\0\0\0WAVEfmt ") == "wav"
    assert audio_format("audio", b"ID3\x04rest") == "mp3"
    assert audio_format("audio", b"\0\0\0\x20ftypM4A ") == "mp4"
    with pytest.raises(InvalidInput, match="audio: must be an mp3, wav, aac or m4a audio file"):
        audio_format("audio", b"hello")


def wav(seconds: float = 1.5) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\x10\x00" * int(16000 * seconds))
    return buf.getvalue()


def test_audio_that_decodes_is_accepted():
    assert check_audio("audio", wav()) == "wav"


@pytest.mark.parametrize("data", [
    b"RIFF\0\0\0\0WAVE" + bytes(range(256)) * 64,  # a WAV header over junk
    b"RIFF\0\0\0\0WAVEfmt ",  # a header and nothing else
    b"ID3\x04" + b"\0" * 4096,  # an MP3 tag over nothing
])
def test_audio_that_does_not_decode_is_refused_naming_the_field(data):
    with pytest.raises(InvalidInput, match="^audio: could not be decoded as (wav|mp3) audio"):
        check_audio("audio", data)


def test_data_uri_must_be_base64():
    from openi2v.domain.inputs import decode_data_uri

    assert decode_data_uri("image", "data:image/png;base64," + base64.b64encode(b"abc").decode()) == b"abc"
    with pytest.raises(InvalidInput, match="image: data URI holds invalid base64"):
        decode_data_uri("image", "data:image/png;base64,@@@")


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_keeps_enough_pixels():
    big = pictures.encode(Image.new("RGB", (8800, 4400), (90, 140, 200)), "JPEG")
    img = check_image("image", big)
    assert img.size == (4400, 2200)  # 1/2 scale: the short side stays >= 2160
    assert img.getpixel((100, 100)) == pytest.approx((90, 140, 200), abs=2)
    small = pictures.encode(Image.new("RGB", (4000, 3000)), "JPEG")
    assert check_image("image", small).size == (4000, 3000)  # 1/2 would leave a short side of 1500
