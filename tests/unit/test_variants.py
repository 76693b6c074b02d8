"""Variants in one process: registrations made again by new artifacts, a new routing taking over without a
failed request, and A/B routing by a stable hash of the user id or by a header.

The Ray Serve side (chain apps, the swap under HTTP load) is tests/integration/test_serve_reliability.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi.testclient import TestClient

from coldstart.serving.routes import create_api
from coldstart.serving.routing import FollowingRouter, Variant, assign, write_routing
from coldstart.serving.bodies import NewInteraction, NewItem, NewUser, RecommendRequest
from coldstart.serving.service import local_service
from coldstart.serving.stores import open_store

ITEM = {"item_id": "new-film", "title": "Space Cowboys Return (2001)",
        "attributes": {"genres": "Sci-Fi|Western", "year": 2001}, "text": "Astronauts ride again."}
USER = {"user_id": "new-viewer", "attributes": {"age": 29, "occupation": "engineer"},
        "text": "I love westerns and space adventures", "liked": ["i3", "i5"]}


def test_assignment_is_stable_per_user_and_follows_the_weights():
    variants = [Variant(name="a", weight=9, settings={}), Variant(name="b", weight=1, settings={}),
                Variant(name="off", weight=0, settings={})]
    picks = [assign(variants, f"user-{i}").name for i in range(20000)]
    assert picks == [assign(variants, f"user-{i}").name for i in range(20000)]  # the same user, the same variant
    assert "off" not in picks
    assert abs(picks.count("b") / len(picks) - 0.1) < 0.01


def _vector(service, item_id: str) -> np.ndarray:
    catalogue = service.ranker.target
    return catalogue.index.vectors([catalogue.item_pos[item_id]])[0]


def test_registrations_made_with_old_artifacts_are_made_again_by_new_ones(serving_artifacts, serving_artifacts_b,
                                                                          store, tmp_path, caplog):
    old = local_service(serving_artifacts, store)
    asyncio.run(old.register_item(NewItem(**ITEM)))
    asyncio.run(old.register_user(NewUser(**USER)))
    asyncio.run(old.record_interaction(NewInteraction(user_id="new-viewer", item_id="i7")))
    # the same content registered through the new artifacts in a store of their own: what they make of it
    fresh = local_service(serving_artifacts_b, tmp_path / "fresh")
    asyncio.run(fresh.register_item(NewItem(**ITEM)))
    asyncio.run(fresh.register_user(NewUser(**USER)))
    asyncio.run(fresh.record_interaction(NewInteraction(user_id="new-viewer", item_id="i7")))

    new = local_service(serving_artifacts_b, store)
    catalogue = new.ranker.target
    assert catalogue.space != old.ranker.target.space
    stats = catalogue.stats()
    assert (stats["registered_items"], stats["registered_users"], stats["interactions"], stats["stale_records"]) \
        == (1, 1, 1, 0)
    assert np.allclose(_vector(new, "new-film"), _vector(fresh, "new-film"), atol=1e-5)
    assert not np.allclose(_vector(new, "new-film"), _vector(old, "new-film"), atol=1e-3)
    assert np.allclose(catalogue.users["new-viewer"].vector, fresh.ranker.target.users["new-viewer"].vector,
                       atol=1e-5)
    request = RecommendRequest(user_id="new-viewer", k=10)
    served = asyncio.run(new.recommend(request))
    assert [i.item_id for i in served.items] == [i.item_id for i in asyncio.run(fresh.recommend(request)).items]

    # without an encoder to make them again, they are left out, as before (counted as stale)
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.served_models import ServingGenerator

    strict = Catalogue.from_artifacts(serving_artifacts_b, ServingGenerator(serving_artifacts_b), open_store(store),
                                      encoder=None)
    assert strict.stats()["stale_records"] == 3 and "new-film" not in strict.item_pos  # item, user, interaction

    # the ingress's copy (a follower): makes nothing again, warns about nothing, and sends the user it does not
    # hold to the ranker, which made them again: the answer is the ranker's
    import logging

    from coldstart.serving.service import LocalStage, RecommendService

    caplog.clear()
    with caplog.at_level(logging.INFO):
        follower = Catalogue.from_artifacts(serving_artifacts_b, ServingGenerator(serving_artifacts_b),
                                            open_store(store), encoder=None, follower=True)
    assert "new-viewer" not in follower.users and follower.regenerate is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    front = RecommendService(encoder=new.encoder, generator=new.generator, ranker=new.ranker, content=new.content,
                             generator_name=new.generator_name, encoder_name=new.encoder_name,
                             known_users=LocalStage(follower))
    assert [i.item_id for i in asyncio.run(front.recommend(request)).items] == [i.item_id for i in served.items]
    # nor does it rank a profile while the ranker holds items it left out: "new-film" is a candidate only there
    assert not follower.holds_every_item()
    profile = RecommendRequest(profile={"attributes": {"age": 31}, "text": "Space adventures"}, k=2,
                               candidates=["new-film", "i7"])
    assert {i.item_id for i in asyncio.run(front.recommend(profile)).items} == {"new-film", "i7"}


class _Refusing:
    """A stage that must not be called."""

    async def call(self, method, *args, **kwargs):
        raise AssertionError(f"{method} went to the replicas; the ingress's own copy could answer it")


def test_the_ingress_copy_ranks_profiles_and_makes_vectors_itself_and_answers_as_the_ranker(serving_artifacts,
                                                                                          tmp_path):
    """A profile's vector and list need no hop beyond the encoder's while the ingress's catalogue holds every
    item; the answers are the ranker's."""
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.served_models import ServingGenerator
    from coldstart.serving.service import LocalStage, RecommendService

    store = tmp_path / "store"
    service = local_service(serving_artifacts, store)
    asyncio.run(service.register_item(NewItem(**ITEM)))
    follower = Catalogue.from_artifacts(serving_artifacts, ServingGenerator(serving_artifacts), open_store(store),
                                        encoder=None, follower=True)
    assert follower.holds_every_item()
    front = RecommendService(encoder=service.encoder, generator=_Refusing(), ranker=_Refusing(),
                             content=service.content, generator_name=service.generator_name,
                             encoder_name=service.encoder_name, known_users=LocalStage(follower),
                             near_generator=LocalStage(follower.generator))
    for profile in ({"attributes": {"age": 31, "occupation": "engineer"}, "text": "Space adventures"},
                    {"text": "I loved westerns", "liked": ["i3"]}):
        request = RecommendRequest(profile=profile, k=10)
        assert asyncio.run(front.recommend(request)).items == asyncio.run(service.recommend(request)).items


def _services(artifacts: dict, store) -> dict:
    return {name: local_service(folder, store, variant=name) for name, folder in artifacts.items()}


def test_a_new_routing_takes_over_while_every_request_is_answered(serving_artifacts, serving_artifacts_b, tmp_path):
    store = tmp_path / "store"
    folders = {"a": serving_artifacts, "b": serving_artifacts_b}
    variant = {name: Variant(name=name, app=name, settings={"artifacts": str(folder)})
               for name, folder in folders.items()}
    router = FollowingRouter(open_store(store), [variant["a"]],
                             lambda v: local_service(v.settings["artifacts"], store, variant=v.name), poll_s=0)
    answered = []

    async def drive():
        await router.register_item(NewItem(**ITEM))
        for n in range(400):
            if n == 20:  # another process (the swap) writes the new routing
                write_routing(open_store(store), [variant["b"]])
            answer = await router.recommend(RecommendRequest(user_id=f"u{n % 30}", k=5))
            answered.append(answer.variant)
            if answered[-1] == "b" and answered.count("b") > 20:
                break
            await asyncio.sleep(0.01)  # the new routing builds in a thread meanwhile

    asyncio.run(drive())
    assert answered[:20] == ["a"] * 20 and answered[-1] == "b"
    first_b = answered.index("b")
    assert set(answered[first_b:]) == {"b"}  # once switched, never back
    assert router.router.services["b"].ranker.target.has_item("new-film")  # made again by b's models


def test_ab_routing_by_user_hash_and_by_header_names_the_variant(serving_artifacts, serving_artifacts_b, tmp_path):
    store = tmp_path / "store"
    folders = {"a": serving_artifacts, "b": serving_artifacts_b}
    variants = [Variant(name=name, app=name, settings={"artifacts": str(f)}) for name, f in folders.items()]
    router = FollowingRouter(open_store(store), variants,
                             lambda v: local_service(v.settings["artifacts"], store, variant=v.name))
    client = TestClient(create_api(router))
    seen = {}
    for n in range(40):
        for _ in range(2):
            r = client.post("/v1/recommend", json={"user_id": f"u{n}", "k": 3})
            assert r.status_code == 200, r.text
            assert seen.setdefault(f"u{n}", r.json()["variant"]) == r.json()["variant"]  # sticky per user
    assert set(seen.values()) == {"a", "b"}
    for name in folders:
        r = client.post("/v1/recommend", json={"user_id": "u1", "k": 3}, headers={"X-Coldstart-Variant": name})
        assert r.status_code == 200 and r.json()["variant"] == name
    r = client.post("/v1/recommend", json={"user_id": "u1", "k": 3}, headers={"X-Coldstart-Variant": "c"})
    assert r.status_code == 422 and r.json()["field"] == "X-Coldstart-Variant", r.text
    # a registration through one is served by both (the other makes it again with its own models)
    assert client.post("/v1/items", json=ITEM, headers={"X-Coldstart-Variant": "b"}).status_code == 201
    for name in folders:
        r = client.get("/v1/items/new-film", headers={"X-Coldstart-Variant": name})
        assert r.status_code == 200 and r.json()["registered"] is True
    health = client.get("/healthz").json()
    assert [v["name"] for v in health["variants"]] == ["a", "b"]


def test_a_plain_app_refuses_a_variant_it_does_not_serve(serving_artifacts, tmp_path):
    client = TestClient(create_api(local_service(serving_artifacts, tmp_path / "store")))
    r = client.post("/v1/recommend", json={"user_id": "u1", "k": 3}, headers={"X-Coldstart-Variant": "b"})
    assert r.status_code == 422 and r.json()["field"] == "X-Coldstart-Variant"
    assert client.post("/v1/recommend", json={"user_id": "u1", "k": 3}).json()["variant"] is None


def test_the_api_key_never_reaches_the_store(serving_artifacts, tmp_path):
    """The routing is a record of the registration store; the key is the front's alone."""
    from coldstart.serving.config import ServeConfig
    from coldstart.serving.file_store import LOG_FILE
    from serve.app import build_app
    from serve.local import variants_of

    store = tmp_path / "store"
    cfg = ServeConfig(artifacts=serving_artifacts, store=store, api_key="s3cret-key-123")
    variants = variants_of({"main": cfg})
    assert all("api_key" not in v.settings for v in variants)
    write_routing(open_store(store), variants)
    build_app(cfg.model_dump(mode="json"))  # a config file's deployment writes its routing too
    assert b"s3cret-key-123" not in (store / LOG_FILE).read_bytes()
