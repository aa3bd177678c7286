"""Property tests: whatever the query string, campaign capture never raises, stores only
validated values, and strips exactly the tracked pieces, keeping the rest byte for byte."""

from __future__ import annotations

from urllib.parse import unquote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from addons.campaign import Campaign
from addons.identity import Identity
from gateway.events import MAX_CLICK_ID
from tests.addons.conftest import configured, context, exchange

CTX = context()
IDENTITY = configured(Identity, ctx=CTX)
CAMPAIGN = configured(Campaign, ctx=CTX)

names = st.sampled_from(
    ["utm_source", "UTM_Medium", "c_campaign", "utm_term", "c_content", "utm_id", "gclid", "fbclid",
     "creator_id", "sub_id", "q", "page", "%75tm_source", "utm_", "", "a+b", "x%zz"]
)  # fmt: skip
values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="%0123456789ABCDEFabcdefzZ+=&;/ ", max_size=40),
    st.just("a" * 300),
)
pieces = st.one_of(
    st.tuples(names, values).map(lambda kv: f"{kv[0]}={kv[1]}".replace("&", "%26")),
    names,
    st.just(""),
)
queries = st.lists(pieces, max_size=12).map("&".join)


@settings(max_examples=400, deadline=None)
@given(queries)
def test_any_query_is_handled(query: str) -> None:
    ex = exchange("/p?" + query)
    IDENTITY.request(ex)
    CAMPAIGN.request(ex)
    for tp in ex.events:
        for value in (tp.source, tp.medium, tp.campaign, tp.term, tp.content, tp.creator_id, tp.sub_id):
            assert value is None or (value and value.isprintable() and len(value) <= 200)
        if tp.click_id is not None:  # a click ID may be longer (TikTok's, Meta's pass 200)
            assert tp.click_id.isprintable() and not any(c.isspace() for c in tp.click_id)
            assert len(tp.click_id) <= MAX_CLICK_ID
        for key, v in tp.raw_params.items():
            param = CAMPAIGN.classify(key)
            longest = MAX_CLICK_ID if param is not None and param.slot == "click" else 200
            assert v.isprintable() and len(v) <= longest
        assert len(tp.raw_params) <= 32
    if ex.upstream_query is not None:
        kept = ex.upstream_query.split("&") if ex.upstream_query else []
        original = query.split("&")
        # the kept pieces are the original ones, in order, none of them tracked
        it = iter(original)
        assert all(piece in it for piece in kept)
        assert not any(
            CAMPAIGN.is_tracked(unquote_plus(p.partition("=")[0], errors="surrogateescape"))
            for p in kept
            if p
        )
    else:
        assert not any(
            CAMPAIGN.is_tracked(unquote_plus(p.partition("=")[0], errors="surrogateescape"))
            for p in query.split("&")
        )
