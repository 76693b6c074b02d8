"""The conditional VAE and the transfer model learn on tiny data, and their outputs are usable."""

import numpy as np
import pandas as pd
import pytest
import torch

from coldstart.evaluate import evaluate
from coldstart.features import AttributeEncoder
from coldstart.models.baselines import RandomRecommender
from coldstart.models.mf import EmbeddingRecommender, TrainPairs
from coldstart.models.towers import cold_start_vectors
from coldstart.models.transfer import TransferModel, TransferTraining, match_items, match_key, target_vectors
from coldstart.models.vae import ConditionalVAE, VAETraining
from tests.unit.test_models import setup, train_backbone  # noqa: F401  (module fixture)


@pytest.fixture(scope="module")
def backbone(setup):  # noqa: F811
    data, pairs = setup
    mf, _ = train_backbone(data, pairs)
    items = data.split.items.set_index("item_id").reindex(data.item_ids).reset_index(names="item_id")
    item_x = AttributeEncoder.fit(items, "item_id").transform(items)
    return data, pairs, mf.user.weight.detach().numpy(), mf.item.weight.detach().numpy(), item_x


def test_vae_loss_falls_kl_stays_finite_and_cold_items_rank_above_random(backbone):
    data, pairs, U, V, item_x = backbone
    user_x = np.ones((data.n_users, 1), np.float32)
    torch.manual_seed(0)
    vae = ConditionalVAE(item_x.shape[1], 1, U.shape[1], latent=8, hidden=64, dropout=0.0)
    training = VAETraining(vae, user_vectors=U, item_vectors=V, item_features=item_x, user_features=user_x,
                           beta=0.1, rec=1.0, lr=3e-3, match_warm_scale=True)
    history = [training.train_epoch(pairs.batches(256)) for _ in range(15)]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["train_recon"] < history[0]["train_recon"]
    assert all(np.isfinite(h["train_kl"]) and h["train_kl"] >= 0 for h in history)
    warm_users = data.train.getnnz(axis=1) > 0
    users, items = cold_start_vectors(vae, user_vectors=U, item_vectors=V, warm_users=warm_users,
                                      warm_items=data.warm_items, user_features=user_x, item_features=item_x)
    ndcg = evaluate(EmbeddingRecommender(users, items), data)["cold"]["ndcg@20"]
    assert ndcg > 1.5 * evaluate(RandomRecommender(data), data)["cold"]["ndcg@20"]
    # Generated embeddings look like warm ones: the same scale, on cold items the calibration never saw.
    cold = ~data.warm_items
    ratio = np.linalg.norm(items[cold], axis=1).mean() / np.linalg.norm(V[data.warm_items], axis=1).mean()
    print(f"generated/warm norm ratio {ratio:.3f}, before calibration {history[-1]['item_norm_ratio']:.3f}")
    assert 0.8 < ratio < 1.25, ratio


def test_vae_sampling_varies_around_the_prior_mean(backbone):
    data, _, U, V, item_x = backbone
    vae = ConditionalVAE(item_x.shape[1], 1, U.shape[1], latent=8, hidden=32).eval()
    x = torch.as_tensor(item_x[:10], dtype=torch.float32)
    with torch.no_grad():
        mean = vae.generate_items(x)
        assert torch.equal(mean, vae.generate_items(x))  # the prior mean is deterministic
        g = torch.Generator().manual_seed(0)
        a, b = vae.generate_items(x, sample=True, generator=g), vae.generate_items(x, sample=True, generator=g)
    assert not torch.equal(a, b)
    assert torch.isfinite(a).all()


def test_match_key_normalises_titles():
    assert match_key("Usual Suspects, The", 1995) == match_key("The Usual Suspects", 1995)
    assert match_key("Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995) == match_key("Shanghai Triad", 1995)
    assert match_key("Heat", 1995) != match_key("Heat", 1986)
    source = pd.DataFrame({"item_id": ["s1", "s2", "s3", "s4"], "title": ["Heat", "Babe", "Twin", "Twin"],
                           "year": [1995, 1995, 1990, 1990]})
    target = pd.DataFrame({"item_id": ["t1", "t2", "t3"], "title": ["heat", "Twin", "Nope"],
                           "year": [1995, 1990, 1995]})
    matched = match_items(source, target)
    assert matched["t1"] == "s1"
    assert pd.isna(matched["t2"])  # ambiguous in the source: left unmatched
    assert pd.isna(matched["t3"])


def test_source_interactions_teach_a_target_cold_item():
    """A target item with no target interactions, liked by every source user who shares the target users'
    taste, ranks first for target users only when the source weighs in (lam > 0)."""
    rng = np.random.default_rng(0)
    n_items, text = 20, rng.normal(size=(20, 8)).astype(np.float32)
    # Target: users like items 0-9; item 0 is cold (no target interaction). Source: users like items 0-9 too.
    t_users = np.repeat(np.arange(30), 5)
    t_items = rng.integers(1, 10, len(t_users))
    s_items = np.concatenate([[0] * 40, rng.integers(1, 10, 160)])
    s_users = np.concatenate([np.arange(40), np.repeat(np.arange(40), 4)])
    ranks = {}
    for lam in (0.0, 0.5):
        torch.manual_seed(0)
        model = TransferModel(8, n_items, 40, 30, dim=8, hidden=16, dropout=0.0)
        training = TransferTraining(model, text, lam=lam, lr=1e-2)
        target = TrainPairs(t_users, t_items, np.arange(10, 20), seed=0)
        source = TrainPairs(s_users, s_items, np.arange(10, 20), seed=1)
        for _ in range(60):
            training.train_epoch(zip(target.batches(32), source.batches(32)))
        users, items = target_vectors(model, text, np.arange(n_items))
        scores = users @ items.T
        ranks[lam] = float((scores > scores[:, [0]]).sum(1).mean())  # items above the cold item 0
    print(f"items ranked above the cold item: {ranks}")
    assert ranks[0.5] < ranks[0.0]
    assert ranks[0.5] < 5  # among the liked items, not among the disliked


def test_a_source_holding_the_targets_interactions_is_found_whatever_its_ids():
    """The leak check reads the data: relabelled ids do not hide a copy of the target; other people are no twins."""
    from coldstart.data.schema import validate
    from coldstart.data.split import make_split
    from coldstart.evaluate import SplitData
    from coldstart.testing import make_tables
    from trainers.transfer import target_twins

    inter, items, users = make_tables(n_users=150, n_items=200, per_user=20, seed=3)
    data = SplitData.from_split(make_split(validate(inter, items, users), "items", seed=0))
    relabel = {i: f"s-{i}" for i in items["item_id"]}
    matched = pd.Series([relabel[i] for i in data.item_ids], index=data.item_ids)
    copy = inter.assign(user_id="x-" + inter["user_id"], item_id=inter["item_id"].map(relabel))
    assert target_twins(copy, matched, data)["share"] > 0.95
    others, _, _ = make_tables(n_users=300, n_items=200, per_user=20, seed=4)
    other = others.assign(user_id="y-" + others["user_id"], item_id=others["item_id"].map(relabel))
    found = target_twins(other, matched, data)
    assert found["users"] > 50 and found["share"] < 0.05
    # a few people who watched everything hold every target user's history, and are still no twins (ml-1m's
    # heaviest users made a legitimate source look like a copy of ml-100k)
    heavy = pd.DataFrame([(f"z-{u}", relabel[i]) for u in range(5) for i in items["item_id"]],
                         columns=["user_id", "item_id"]).assign(rating=4.0, timestamp=0)
    assert target_twins(pd.concat([other, heavy[other.columns]]), matched, data)["share"] < 0.05


def test_training_decodes_each_row_as_generation_would():
    # Training decodes every row twice with one content vector (posterior z and prior mean), sharing the first
    # layer's content half; the sums must be those of decoding each alone, as serving does.
    from coldstart.models.vae import EntityCVAE

    torch.manual_seed(0)
    cvae = EntityCVAE(content_dim=20, dim=8, latent=4, hidden=16, dropout=0.3).eval()
    z1, z2, c = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 20)
    shared = cvae.decode_many([z1, z2], c)
    torch.testing.assert_close(shared[0], cvae.decode(z1, c))
    torch.testing.assert_close(shared[1], cvae.decode(z2, c))
    with torch.no_grad():
        torch.testing.assert_close(cvae(torch.randn(5, 8), c)["generated"], cvae.generate(c))


def test_dropout_keeps_each_value_with_probability_one_minus_p_and_rescales_it():
    from coldstart.models.layers import Dropout

    torch.manual_seed(0)
    layer, x = Dropout(0.3), torch.ones(400, 500, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)  # the gradient flows through the kept values alone
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_a_transfer_step_scores_each_row_as_its_item_vector_would():
    # The step runs the text tower once per distinct item of both domains' batches; each (user, pos, neg)
    # must still be scored with that item's own vector, as `item_vectors` gives it.
    from coldstart.models.mf import bpr_loss

    torch.manual_seed(0)
    model = TransferModel(16, 50, 30, 20, dim=8, hidden=32, dropout=0.0)
    with torch.no_grad():
        model.item.weight.normal_()
    text = torch.randn(50, 16)
    source = (torch.randint(0, 30, (64,)), torch.randint(0, 50, (64,)), torch.randint(0, 50, (64,)))
    target = (torch.randint(0, 20, (64,)), torch.randint(0, 50, (64,)), torch.randint(0, 50, (64,)))
    for (loss, _), table, (users, pos, neg) in zip(model(text, source, target), (model.source_user, model.target_user),
                                                     (source, target)):
        u = table(users)
        expected = bpr_loss((u * model.item_vectors(text[pos], pos)).sum(-1),
                            (u * model.item_vectors(text[neg], neg)).sum(-1))
        torch.testing.assert_close(loss, expected)
