"""The index-txt and COCO-json readers under generated input: they load or raise SSTNetError, nothing else."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from utils.data.annotations import read_coco, read_index
from utils.errors import SSTNetError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)
numbers = st.one_of(st.integers(-5, 300), st.floats(-5, 300), st.just(float("inf")), st.just(float("nan")),
                    st.text(max_size=3), st.none(), st.booleans())
images = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 5), st.text(max_size=2), st.none()),
                                "file_name": st.one_of(st.text(max_size=10), st.integers()),
                                "width": numbers, "height": numbers})
annotations = st.fixed_dictionaries({"image_id": st.one_of(st.integers(0, 5), st.lists(st.integers(), max_size=2),
                                                           st.text(max_size=2)),
                                     "category_id": st.one_of(st.integers(0, 3),
                                                              st.dictionaries(st.text(), st.integers(), max_size=1)),
                                     "bbox": st.one_of(st.lists(numbers, max_size=5), numbers)})
coco_like = st.fixed_dictionaries({}, optional={
    "images": st.one_of(st.lists(images, max_size=4), json_values),
    "annotations": st.one_of(st.lists(annotations, max_size=4), json_values),
    "categories": st.one_of(st.lists(st.fixed_dictionaries({"id": st.one_of(st.integers(0, 3), scalars)}), max_size=3),
                            json_values)})


def load_or_clear_error(reader, path, root):
    try:
        reader(path, root)
    except SSTNetError as exc:
        assert str(exc) and "\n" not in str(exc)


@FUZZ
@given(data=st.one_of(coco_like, json_values))
def test_coco_reader_on_generated_json(tmp_path, data):
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(data))
    load_or_clear_error(read_coco, path, tmp_path)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_coco_reader_on_arbitrary_bytes(tmp_path, raw):
    path = tmp_path / "fuzz.json"
    path.write_bytes(raw)
    load_or_clear_error(read_coco, path, tmp_path)


index_tokens = st.one_of(st.text(alphabet="0123456789,-.ab /", max_size=20),
                         st.lists(st.integers(-5, 500), min_size=0, max_size=7).map(lambda v: ",".join(map(str, v))))


@FUZZ
@given(lines=st.lists(st.lists(index_tokens, max_size=4).map(" ".join), max_size=6))
def test_index_reader_on_generated_lines(tmp_path, lines):
    path = tmp_path / "fuzz.txt"
    path.write_text("\n".join(lines))
    load_or_clear_error(read_index, path, tmp_path)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_index_reader_on_arbitrary_bytes(tmp_path, raw):
    path = tmp_path / "fuzz.txt"
    path.write_bytes(raw)
    load_or_clear_error(read_index, path, tmp_path)
