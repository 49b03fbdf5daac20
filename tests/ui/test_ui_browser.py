"""The admin UI in a real browser (Debian chromium through Playwright) against a real proxy and the openai SDK.

One walk through the pages an admin uses, checking each step through the browser and, where it matters, through the
management API and LLM calls: budgets created from the form exist for `/budget/info`, spend from real calls shows on
the customer page, blocking from the UI refuses the next call with 403. Screenshots go to tests/artifacts/ui/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.proxy import RunningProxy, base_config, running_proxy

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
CUSTOMER = "acme-corp-42"
TIER = "ui-pro-tier"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    # One proxy for the module: the sign-in test creates nothing, so the lifecycle test still starts empty.
    # The one deployment is in the EU: the customer the lifecycle test pins to `eu` is served there.
    model = {"model_name": "gpt-3.5-turbo", "litellm_params": {"model": "mock/gpt-3.5-turbo", "region_name": "eu"}}
    with running_proxy(tmp_path_factory.mktemp("ui-browser"), base_config(model_list=[model])) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    script_errors: list[str] = []
    opened.on("pageerror", lambda error: script_errors.append(str(error)))
    opened.on("console", lambda msg: script_errors.append(msg.text) if "Refused to" in msg.text else None)
    try:
        yield opened
    finally:
        context.close()
    assert script_errors == [], "scripts failed or were blocked (CSP)"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def chat(proxy: RunningProxy, user: str) -> None:
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key, max_retries=0) as client:
        client.chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Write a haiku about budgets"}], user=user
        )


def api(proxy: RunningProxy) -> httpx.Client:
    return proxy.client()


def sign_in(page: Page, proxy: RunningProxy, key: str) -> None:
    page.fill("#f-key", key)
    page.click("button:has-text('Sign in')")


def test_sign_in_refuses_a_wrong_key_and_posts_need_the_csrf_token(page: Page, proxy: RunningProxy) -> None:
    page.goto(proxy.url + "/ui/customers")
    expect(page).to_have_url(proxy.url + "/ui/login?next=%2Fui%2Fcustomers")
    sign_in(page, proxy, "sk-not-the-key")
    expect(page.locator("[data-error-for=key]")).to_contain_text("Invalid key")
    expect(page.locator("#f-key")).to_have_value("")
    shot(page, "01-sign-in-refused")

    sign_in(page, proxy, proxy.master_key)
    expect(page).to_have_url(proxy.url + "/ui/customers")
    expect(page.locator(".empty h2")).to_have_text("No customers yet")
    shot(page, "02-customers-empty")

    # The browser's own session cookie, but no token: refused, and the customer is not created.
    refused = page.request.post(proxy.url + "/ui/customers/new", form={"user_id": "csrf-victim"})
    assert refused.status == 403
    with api(proxy) as client:
        assert client.get("/customer/info", params={"end_user_id": "csrf-victim"}).status_code == 404

    page.click("button:has-text('Sign out')")
    expect(page.locator(".notice")).to_have_text("You are signed out.")
    page.goto(proxy.url + "/ui/budgets")
    expect(page).to_have_url(proxy.url + "/ui/login?next=%2Fui%2Fbudgets")


def test_budget_and_customer_lifecycle(page: Page, proxy: RunningProxy) -> None:
    page.goto(proxy.url + "/ui/login")
    sign_in(page, proxy, proxy.master_key)

    # Budgets: empty state, then bad values that change nothing.
    page.click("nav >> text=Budgets")
    expect(page.locator(".empty h2")).to_have_text("No budgets yet")
    shot(page, "03-budgets-empty")
    page.click("text=+ Create Budget")
    page.fill("#f-budget_id", TIER)
    page.fill("#f-max_budget", "-5")
    page.fill("#f-rpm_limit", "100")
    page.click("button:has-text('Create Budget')")
    expect(page.locator("[data-error-for=max_budget]")).to_have_text(
        "max_budget must be a non-negative finite number. Received: -5.0"
    )
    expect(page.locator("#f-rpm_limit")).to_have_value("100")  # what was typed stays
    shot(page, "04-budget-form-error")
    page.fill("#f-max_budget", "5")
    page.select_option("#f-budget_duration", "custom")
    page.fill("#f-budget_duration_custom", "fortnight")
    page.click("button:has-text('Create Budget')")
    expect(page.locator("[data-error-for=budget_duration_custom]")).to_contain_text("fortnight")
    page.fill("#f-tpm_limit", "-1")
    page.select_option("#f-budget_duration", "30d")
    page.click("button:has-text('Create Budget')")
    expect(page.locator("[data-error-for=tpm_limit]")).to_have_text(
        "tpm_limit: Input should be greater than or equal to 0"
    )
    with api(proxy) as client:
        assert client.get("/budget/list").json() == []

    # A valid budget: in the table and through the API.
    page.fill("#f-tpm_limit", "100000")
    page.click("button:has-text('Create Budget')")
    expect(page.locator(".notice")).to_have_text(f"Budget {TIER} created.")
    row = page.locator(f"tr[data-budget-id='{TIER}']")
    expect(row).to_contain_text("$5.00")
    expect(row).to_contain_text("100,000")
    expect(row).to_contain_text("Monthly (30d)")
    shot(page, "05-budgets")
    with api(proxy) as client:
        [info] = client.post("/budget/info", json={"budgets": [TIER]}).json()
    assert (info["max_budget"], info["tpm_limit"], info["rpm_limit"]) == (5.0, 100_000, 100)
    assert info["budget_duration"] == "30d" and info["budget_reset_at"]

    # A customer on that tier.
    page.click("nav >> text=Customers")
    page.click("text=+ Create New Customer")
    page.fill("#f-user_id", CUSTOMER)
    page.fill("#f-alias", "Acme Corp")
    page.select_option("#f-budget_id", TIER)
    page.select_option("#f-allowed_model_region", "eu")
    page.fill("#f-max_budget", "3")  # a tier and own limits: the API's rule refuses both
    page.click("button:has-text('Create Customer')")
    expect(page.locator("[data-error-for=max_budget]")).to_have_text(
        "Set either 'max_budget' or 'budget_id', not both."
    )
    shot(page, "05b-customer-form-error")
    page.fill("#f-max_budget", "")
    page.click("button:has-text('Create Customer')")
    expect(page.locator(".notice")).to_have_text(f"Customer {CUSTOMER} created.")
    expect(page.locator("#customer-status")).to_have_text("Active")
    expect(page.locator(".empty-inline")).to_contain_text("No requests yet")

    # Spend from real LLM calls shows on its page.
    for _ in range(3):
        chat(proxy, CUSTOMER)
    chat(proxy, "someone-else")
    page.reload()
    expect(page.locator("#requests-table tbody tr")).to_have_count(3)
    expect(page.locator("#requests-table")).to_contain_text("gpt-3.5-turbo")
    spend_text = page.locator("#customer-spend").inner_text()
    assert spend_text.startswith("$") and float(spend_text[1:].replace(",", "")) > 0
    with api(proxy) as client:
        assert client.get("/customer/info", params={"end_user_id": CUSTOMER}).json()["spend"] > 0
    assert page.locator("svg.chart rect.bar").count() == 30
    shot(page, "06-customer")

    # The table: search through htmx, the spend bar, the budget column.
    page.click("nav >> text=Customers")
    expect(page.locator("#customers-table tbody tr")).to_have_count(2)
    page.fill("#f-search", "acme")
    expect(page.locator("#customers-table tbody tr")).to_have_count(1)
    expect(page).to_have_url(proxy.url + "/ui/customers?search=acme")
    row = page.locator(f"tr[data-customer-id='{CUSTOMER}']")
    expect(row).to_contain_text(TIER)
    expect(row).to_contain_text("EU")
    expect(row.locator(".budget-bar")).to_contain_text("of $5.00")
    shot(page, "07-customers-search")
    page.fill("#f-search", "nobody-matches-this")
    expect(page.locator(".empty h2")).to_contain_text("No customer matches")
    page.fill("#f-search", "")
    expect(page.locator("#customers-table tbody tr")).to_have_count(2)

    # Block from the UI: the next call is refused with 403; unblock lets it through again.
    row = page.locator(f"tr[data-customer-id='{CUSTOMER}']")
    row.locator("a >> nth=0").click()
    page.click("button:has-text('Block')")
    expect(page.locator("#customer-status")).to_have_text("Blocked")
    shot(page, "08-customer-blocked")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(proxy, CUSTOMER)
    assert refused.value.status_code == 403
    page.click("button:has-text('Unblock')")
    expect(page.locator("#customer-status")).to_have_text("Active")
    chat(proxy, CUSTOMER)

    # Edit: the alias changes, the tier is untouched (no private copy).
    page.click("a.button:has-text('Edit')")
    expect(page.locator("#f-user_id")).to_have_attribute("readonly", "")
    page.fill("#f-alias", "Acme Corporation")
    page.fill("#f-rpm_limit", "abc")
    page.click("button:has-text('Save')")
    expect(page.locator("[data-error-for=rpm_limit]")).to_contain_text("rpm_limit: Input should be a valid integer")
    shot(page, "08b-customer-edit-error")
    page.fill("#f-rpm_limit", "100")
    page.click("button:has-text('Save')")
    expect(page.locator(".notice")).to_have_text(f"Customer {CUSTOMER} saved.")
    expect(page.locator("h1 + p.muted")).to_have_text("Acme Corporation")
    with api(proxy) as client:
        assert client.get("/customer/info", params={"end_user_id": CUSTOMER}).json()["budget_id"] == TIER

    # Spend and Models pages.
    page.click("nav >> text=Spend")
    expect(page.locator("#top-customers")).to_contain_text(CUSTOMER)
    expect(page.locator("#models-spend")).to_contain_text("gpt-3.5-turbo")
    assert page.locator("#total-spend").inner_text() != "$0.0000"
    shot(page, "09-spend")
    page.click("nav >> text=Models")
    expect(page.locator("#models-table")).to_contain_text("gpt-3.5-turbo")
    shot(page, "10-models")

    # Edit the budget (its id is read-only), then delete it: the confirmation names who falls back.
    page.click("nav >> text=Budgets")
    page.locator(f"tr[data-budget-id='{TIER}'] >> text=Edit").click()
    expect(page.locator("#f-budget_id")).to_have_attribute("readonly", "")
    page.fill("#f-max_budget", "7.5")
    page.click("button:has-text('Save')")
    expect(page.locator(f"tr[data-budget-id='{TIER}']")).to_contain_text("$7.50")
    shot(page, "11-budget-edited")
    page.locator(f"tr[data-budget-id='{TIER}'] >> text=Delete").click()
    expect(page.locator("#delete-impact")).to_contain_text("1 customer uses this budget: it will fall back to")
    shot(page, "12-budget-delete-confirm")
    page.click("button:has-text('Delete budget')")
    expect(page.locator(".notice")).to_have_text(f"Budget {TIER} deleted.")
    with api(proxy) as client:
        assert client.get("/customer/info", params={"end_user_id": CUSTOMER}).json()["budget_id"] is None

    # Delete the customer.
    page.goto(proxy.url + f"/ui/customers/view?id={CUSTOMER}")
    page.click("a.button:has-text('Delete')")
    expect(page.locator("#delete-impact")).to_contain_text("spend logs and its budget are kept")
    shot(page, "13-customer-delete-confirm")
    page.click("button:has-text('Delete customer')")
    expect(page.locator(".notice")).to_have_text(f"Customer {CUSTOMER} deleted.")
    expect(page.locator("#customers-table tbody tr")).to_have_count(1)
    with api(proxy) as client:
        assert client.get("/customer/info", params={"end_user_id": CUSTOMER}).status_code == 404


# ---- issue 12: the Keys page and the read_only role ------------------------------------------------------------------

READ_ONLY_BUTTONS = {"Sign out", "Search", "Filter", "Apply"}  # sign-out and the GET forms (search, filter, range)


def test_keys_page_and_a_read_only_session(page: Page, proxy: RunningProxy) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=proxy.url)
    page.goto(proxy.url + "/ui/login")
    sign_in(page, proxy, proxy.master_key)
    page.click("nav >> text=Keys")
    expect(page.locator(".empty h2")).to_have_text("No keys yet")
    page.click("text=+ Create Key")
    page.fill("#f-key_alias", "browser-app")
    page.select_option("#f-key_type", "llm_api")
    page.fill("#f-models", "gpt-3.5-turbo")
    page.fill("#f-max_budget", "2")
    page.fill("#f-rpm_limit", "30")
    page.click("button:has-text('Create Key')")

    # Shown once, in a readonly input, with a Copy button that fills the clipboard.
    field = page.locator("#new-key")
    expect(field).to_have_attribute("readonly", "")
    plaintext = field.input_value()
    assert plaintext.startswith("sk-")
    page.click("#copy-key")
    expect(page.locator("#copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == plaintext
    shot(page, "14-key-created")
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key=plaintext, max_retries=0) as client:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}])

    # The list shows the masked name only; Block refuses the key's next call with 401.
    page.click("text=Done: back to Keys")
    row = page.locator("#keys-table tbody tr", has_text="browser-app")
    expect(row.locator(".key-name")).to_have_text(f"sk-...{plaintext[-4:]}")
    expect(row).to_contain_text("$2.00")
    assert plaintext not in page.content()
    shot(page, "15-keys")
    row.locator("button:has-text('Block')").click()
    expect(page.locator(".notice")).to_contain_text("Key browser-app blocked")
    expect(row.locator(".key-status")).to_have_text("Blocked")
    with (
        openai.OpenAI(base_url=proxy.url + "/v1", api_key=plaintext, max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}])
    page.click("button:has-text('Sign out')")

    # A read_only key: every page, and not one write control on any of them.
    with api(proxy) as client:
        reader_key = client.post("/key/generate", json={"key_type": "read_only"}).json()["key"]
        client.post("/customer/new", json={"user_id": "ro-visible"}).raise_for_status()
    page.goto(proxy.url + "/ui/login")
    sign_in(page, proxy, reader_key)
    expect(page.locator("#read-only-badge")).to_be_visible()
    for path in ("/ui/customers", "/ui/customers/view?id=ro-visible", "/ui/budgets", "/ui/keys", "/ui/spend"):
        page.goto(proxy.url + path)
        expect(page.locator("h1").first).to_be_visible()
        assert page.locator("form[method=post]").count() == 1, path  # sign-out
        assert page.locator("a[href*='/new'], a[href*='/edit'], a[href*='/delete']").count() == 0, path
        buttons = set(page.locator("button").all_inner_texts())
        assert buttons <= READ_ONLY_BUTTONS, (path, buttons)
    page.goto(proxy.url + "/ui/keys")
    expect(page.locator("#keys-table tbody tr", has_text="browser-app")).to_have_count(1)
    shot(page, "16-keys-read-only")
    # A write page asked for by hand answers 403, and so does a crafted POST with the session's own token.
    response = page.goto(proxy.url + "/ui/keys/new")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Read-only access")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    crafted = page.request.post(proxy.url + "/ui/keys/new", form={"csrf_token": token, "key_alias": "by-reader"})
    assert crafted.status == 403
    with api(proxy) as client:
        assert client.get("/key/list", params={"key_alias": "by-reader"}).json()["keys"] == []
