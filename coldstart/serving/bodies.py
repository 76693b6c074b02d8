"""Request and response bodies of the HTTP API (v1); their limits are part of the OpenAPI schema."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

MAX_K = 100
MAX_TEXT_CHARS = 2000
MAX_ATTRIBUTES = 64
MAX_LIKED = 500
MAX_CANDIDATES = 10_000
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
MAX_INT = 2 ** 53  # integers a JSON number holds exactly; a larger attribute is an error, not a 500

ItemRef = Annotated[str, StringConstraints(min_length=1, max_length=128)]  # an element of `liked`, `candidates`

AttributeValue = str | int | float | bool | None
Id = Field(..., pattern=ID_PATTERN, description="1-128 characters: letters, digits, '_', '.', ':', '-'.")


class FieldValueError(ValueError):
    """A check across fields; the API names `field` (within the object that failed) in its answer."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error that names it, not silently ignored


def _check_attributes(cls, attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes, got {len(attributes)}")
    for name, value in attributes.items():
        if not name or len(name) > 64:
            raise ValueError(f"attribute names are 1-64 characters, got {name[:80]!r}")
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"attribute {name!r} is longer than {MAX_TEXT_CHARS} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"attribute {name!r} must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise ValueError(f"attribute {name!r} must be within +-2**53, got a number of {len(str(value))} digits")
    return attributes


class Profile(_Body):
    """A new user described by what we know: any of attributes, free text and liked items."""

    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict, description="E.g. {\"age\": 31, \"gender\": \"F\", \"occupation\": \"writer\"}.")
    text: str = Field("", max_length=MAX_TEXT_CHARS, description="Free text about the user.")
    liked: list[ItemRef] = Field(default_factory=list, max_length=MAX_LIKED,
                                 description="Ids of items the user liked (each 1-128 characters).")

    _limits = field_validator("attributes")(_check_attributes)


class RecommendRequest(_Body):
    user_id: str | None = Field(None, max_length=128, description="A known or registered user; or give `profile`.")
    profile: Profile | None = Field(None, description="A new user's profile; or give `user_id`.")
    k: int = Field(10, gt=0, le=MAX_K, description="How many items.")
    exclude_seen: bool = Field(True, description="Leave out items the user interacted with or liked.")
    candidates: list[ItemRef] | None = Field(None, max_length=MAX_CANDIDATES,
                                             description="Rank only among these item ids (each 1-128 characters).")
    explain: bool = Field(False, description="Say, per item, why it was recommended (`explanation`).")

    @model_validator(mode="after")
    def _one_user(self) -> "RecommendRequest":
        if (self.user_id is None) == (self.profile is None):
            raise FieldValueError("user_id, profile", "give exactly one of them")
        return self


class BecauseOf(BaseModel):
    item_id: str
    title: str | None
    similarity: float = Field(..., description="Cosine of the two items' collaborative vectors.")


class SharedAttribute(BaseModel):
    attribute: str = Field(..., description="An attribute value of the item, e.g. \"genres: Drama\".")
    your_items: int = Field(..., description="How many of the user's items have it too.")


class VectorSource(BaseModel):
    source: Literal["interactions", "content", "content+interactions"] = Field(
        ..., description="interactions: a trained item; content: placed from its text and attributes; "
                         "content+interactions: moved from there by its first interactions.")
    content_weight: float = Field(..., description="The content's share of the vector (1: content only; the "
                                                   "content counts as one interaction in the fold-in).")
    interactions: int | None = Field(..., description="Interactions since it was placed (None: a trained item).")


class Explanation(BaseModel):
    because: list[BecauseOf] = Field(..., description="The user's items (seen, interacted with or liked) closest "
                                                      "to this one, closest first.")
    shared_attributes: list[SharedAttribute] = Field(..., description="Its attribute values the user's items share.")
    text_match: float | None = Field(..., description="Cosine of what the user said (profile text) and the "
                                                      "item's text; None without profile text, or where "
                                                      "it names titles or attribute values.")
    stated: list[str] = Field(default_factory=list, description="The attribute values the user named (the "
                                                               "answer's `stated`) that this item carries.")
    vector: VectorSource


class RecommendedItem(BaseModel):
    item_id: str
    title: str | None
    score: float
    cold: bool = Field(..., description="True if the item had no training interactions (new or registered).")
    explanation: Explanation | None = Field(None, description="Why, when the request asked (`explain`).")


class Recommendation(BaseModel):
    user_id: str | None
    path: Literal["warm", "cold"] = Field(..., description="warm: a user with training history; cold: anyone else.")
    items: list[RecommendedItem]
    named: list[str] = Field(default_factory=list, description="Items a new profile's text names by title (\"I "
                                                                "loved Fargo\"): taken as liked, not recommended.")
    stated: list[str] = Field(default_factory=list, description="Attribute values the user's text names (\"Mostly "
                              "horror films for me\" names \"genres: Horror\"): a share of the list goes to items "
                              "that carry them, ranked by the collaborative score.")
    variant: str | None = Field(None, description="The served variant (artifacts) that answered, when the app "
                                                  "serves named variants (an A/B test, a swap).")


class NewItem(_Body):
    item_id: str = Id
    title: str | None = Field(None, max_length=512, description="Display title; also part of the item's text.")
    attributes: dict[str, AttributeValue] = Field(default_factory=dict,
                                                  description="E.g. {\"year\": 1999, \"genres\": \"Comedy|Drama\"}.")
    text: str = Field("", max_length=MAX_TEXT_CHARS, description="Free text about the item (a description).")

    _limits = field_validator("attributes")(_check_attributes)


class NewUser(Profile):
    user_id: str = Id


class NewInteraction(_Body):
    user_id: str = Field(..., max_length=128, description="A known or registered user.")
    item_id: str = Field(..., max_length=128, description="A known or registered item.")
    rating: float | None = Field(None, allow_inf_nan=False,
                                 description="The user's rating, if any: kept with the interaction; every "
                                             "interaction counts as a positive, as in training.")
    timestamp: float | None = Field(None, ge=0, allow_inf_nan=False,
                                    description="Unix seconds. The same user, item and timestamp again is the "
                                                "same interaction (a retry), answered as the first time.")


class Recorded(BaseModel):
    user_id: str
    item_id: str
    moved: list[Literal["item", "user"]] = Field(
        ..., description="Whose vector moved toward its interactions: a cold or registered item's, a cold or "
                         "registered user's. Warm items and users keep theirs until the next training run.")
    item_interactions: int = Field(..., description="Interactions that moved the item's vector so far.")
    user_interactions: int = Field(..., description="Interactions that moved the user's vector so far.")


class Deleted(BaseModel):
    id: str
    kind: Literal["item", "user"]
    deleted: Literal[True]
    erased_records: int = Field(..., description="Records about it (its registration, text, attributes and "
                                                 "interactions) erased from the registration store.")


class ItemInfo(BaseModel):
    item_id: str
    title: str | None
    cold: bool
    registered: bool = Field(..., description="Registered through the API (not in the training artifacts).")


class Registered(BaseModel):
    id: str
    kind: Literal["item", "user"]
    index_size: int = Field(..., description="Items in the index after this registration.")


class VariantInfo(BaseModel):
    name: str
    weight: float = Field(..., description="Share of users routed to it by the hash of their id.")
    generator: str
    app: str = Field(..., description="The Ray Serve app holding its encoder, generator and ranker.")


class Health(BaseModel):
    status: Literal["ok"]
    items: int
    users: int
    registered_items: int
    registered_users: int
    generator: str
    encoder: str
    variants: list[VariantInfo] = Field(default_factory=list, description="What the app routes to, when it serves "
                                                                          "named variants; the counts above are "
                                                                          "the first one's.")
