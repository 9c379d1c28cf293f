"""The API is documented: every endpoint under /v1 with its body schema and its error answers."""

from __future__ import annotations

from tests.intake.conftest import IntakeFactory


async def test_openapi_documents_endpoints_bodies_and_errors(intake: IntakeFactory) -> None:
    app = await intake()
    spec = (await app.client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        "/v1/contacts": ("ContactIn", {"202", "401", "413", "415", "422", "503"}),
        "/v1/contacts/abandoned": ("AbandonIn", {"202", "401", "404", "422", "503"}),
        "/v1/callback-requests": ("CallbackRequestIn", {"202", "401", "413", "415", "422", "503"}),
        "/v1/webhooks/twilio/voice": ("TwilioCall", {"200", "401", "413", "415", "422", "503"}),
        "/v1/webhooks/twilio/queue-result": ("TwilioCall", {"200", "401", "422", "503"}),
    }
    schemas = spec["components"]["schemas"]
    for path, (body, codes) in expected.items():
        op = paths[path]["post"]
        content = op["requestBody"]["content"]
        refs = {media["schema"]["$ref"].rsplit("/", 1)[1] for media in content.values()}
        assert refs == {body}, path
        assert codes <= set(op["responses"]), (path, set(op["responses"]))
        assert body in schemas
    assert "CustomerIn" in schemas and "phone" in schemas["CustomerIn"]["properties"]
    assert "CallSid" in schemas["TwilioCall"]["properties"]  # Twilio's own parameter names
    assert "text/xml" in paths["/v1/webhooks/twilio/voice"]["post"]["responses"]["200"]["content"]
    assert (await app.client.get("/docs")).status_code == 200
