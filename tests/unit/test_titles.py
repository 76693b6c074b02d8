"""Items a new user names in their text count as liked: found as people type titles, and not recommended back."""

from __future__ import annotations

import asyncio

from coldstart.serving.bodies import NewUser, RecommendRequest
from coldstart.serving.service import local_service
from coldstart.serving.titles import TitleMatcher

TITLES = ["Fargo (1996)", "Godfather, The (1972)", "Godfather: Part II, The (1974)", "Toy Story (1995)",
          "War, The (1994)", "Speed (1994)", None, "Usual Suspects, The (1995)"]


def found(text: str) -> list[str]:
    return [TITLES[p] for p in TitleMatcher(TITLES).find(text)]


def test_titles_are_found_as_people_type_them():
    assert found("I loved Fargo and the godfather") == ["Fargo (1996)", "Godfather, The (1972)"]
    assert found("toy story, The Usual Suspects.") == ["Toy Story (1995)", "Usual Suspects, The (1995)"]
    assert found("I loved The Godfather: Part II") == ["Godfather: Part II, The (1974)"]  # the longest match
    assert found("I saw Godfather twice, Fargo once") == ["Godfather, The (1972)", "Fargo (1996)"]  # no article


def test_a_one_word_title_counts_only_where_it_is_written_as_a_name():
    assert found("I love speed and fargo") == []
    assert found("I love War movies. War is my favourite genre.") == []
    assert found("Speed. I loved Speed") == ["Speed (1994)"]


def test_a_profile_naming_items_gets_them_as_liked_not_recommended(serving_artifacts, tmp_path):
    service = local_service(serving_artifacts, tmp_path / "store", text_weight=0.0)
    text = "I loved Movie 3 and movie 12"

    def ask(**profile):
        return asyncio.run(service.recommend(RecommendRequest(profile=profile, k=10)))

    said = ask(text=text)
    assert said.named == ["i3", "i12"]
    assert not {"i3", "i12"} & {i.item_id for i in said.items}
    given = ask(text=text, liked=["i3", "i12"])
    assert [i.item_id for i in said.items] == [i.item_id for i in given.items]
    assert ask(text="I love Horror movies").named == []

    asyncio.run(service.register_user(NewUser(user_id="talker", text=text)))
    listed = asyncio.run(service.recommend(RecommendRequest(user_id="talker", k=10)))
    assert not {"i3", "i12"} & {i.item_id for i in listed.items}


def test_a_text_that_names_items_is_not_matched_to_items_texts(serving_artifacts, tmp_path):
    """The named items say what the user likes; the words' match to item texts would bring the namesakes."""
    lists = {}
    for weight in (0.0, 1.0):
        service = local_service(serving_artifacts, tmp_path / f"store-{weight}", text_weight=weight)
        answer = asyncio.run(service.recommend(RecommendRequest(profile={"text": "I loved Movie 3"}, k=10)))
        lists[weight] = [i.item_id for i in answer.items]
    assert lists[0.0] == lists[1.0]


def test_a_text_names_attribute_values_as_people_write_them():
    from coldstart.serving.titles import LabelMatcher, TitleMatcher

    labels = [["genres: Horror", "genres: Sci-Fi", "year: 1990s"], ["genres: Children's", "genres: Comedy"],
              ["genres: War", "genres: unknown", "size: XL"]]
    matcher, titles = LabelMatcher(labels), TitleMatcher(["Star Wars (1977)", None, None])
    found = lambda text: matcher.find(text, titles.spans(text))  # noqa: E731
    assert found("Mostly horror films for me, that is what I watch on weekends.") == ["genres: Horror"]
    assert found("SCI-FI and comedies") == ["genres: Sci-Fi", "genres: Comedy"]
    assert found("children's films") == found("films for children") == ["genres: Children's"]
    assert found("I loved Star Wars") == []  # a title's words name no war film
    assert found("I loved Star Wars and war films") == ["genres: War"]
    assert found("anything from the 1990s, unknown or xl") == []  # digits, vague words, too short
    assert found("horrible") == [] and found("warm comedy") == ["genres: Comedy"]


def test_one_long_registered_title_costs_a_request_nothing():
    """A text is scanned once, each word looked up among the titles that start with it: one registered title of
    256 one-letter words used to make every profile request scan 256 lengths at every word (0.38 s under the
    catalogue lock); the lookups now stay within words x `MAX_TITLE_WORDS`, and such a title is never found."""
    from coldstart.serving.titles import MAX_TITLE_WORDS, TitleMatcher

    class Counting(dict):
        gets = 0

        def get(self, key, default=None):
            Counting.gets += 1
            return super().get(key, default)

    crafted = " ".join("abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(256))
    matcher = TitleMatcher(["Fargo (1996)", "Godfather, The (1972)", crafted, "A B"])
    matcher.index.values = Counting(matcher.index.values)
    text = "I loved Fargo and the godfather. " + " ".join("abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(1000))
    words = len(text.split())
    assert matcher.find(text) == [0, 1, 3]  # "a b" at the end of the letters is a title; the crafted one is not
    assert Counting.gets <= words * 2  # at most the distinct lengths of titles starting with each word
    assert Counting.gets <= words * MAX_TITLE_WORDS
