"""Azure activity log: diagnostic-settings records and the REST form."""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sources.reading import read_with
from watchkeeper.sources.azure import AzureActivity
from watchkeeper.sources.deadletter import DeadLetter
from watchkeeper.sources.entra import EntraId

DIAG = {
    "time": "2024-03-01T12:00:00.0000000Z",
    "resourceId": "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/FIREWALLPOLICIES/FW1",
    "operationName": "MICROSOFT.NETWORK/FIREWALLPOLICIES/WRITE",
    "category": "Administrative",
    "resultType": "Success",
    "callerIpAddress": "203.0.113.9",
    "correlationId": "c1",
    "identity": {"claims": {"name": "carol@contoso.com"}},
    "properties": {"message": "Microsoft.Network/firewallPolicies/write"},
}
REST = {
    "caller": "dave@contoso.com",
    "eventTimestamp": "2024-03-01T12:05:00Z",
    "operationName": {
        "value": "Microsoft.Compute/virtualMachines/delete",
        "localizedValue": "Delete Virtual Machine",
    },
    "category": {"value": "Administrative"},
    "resourceProviderName": {"value": "Microsoft.Compute"},
    "resourceId": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
    "status": {"value": "Failed"},
    "httpRequest": {"clientIpAddress": "198.51.100.2"},
}


def read(data: bytes) -> tuple[pa.Table | None, DeadLetter, list[str]]:
    """All batches of `data` as one table, the dead letter and its messages."""
    return read_with(AzureActivity, data, "act", batch_size=2)


def test_both_shapes() -> None:
    data = orjson.dumps({"records": [DIAG, REST, {"no": "op"}]})
    assert AzureActivity.sniff(data[:4096], "a.json") >= 0.9
    assert EntraId.sniff(data[:4096], "a.json") == 0.0
    table, dead, said = read(data)
    assert table is not None and table.num_rows == 2
    assert dead.count == 1 and said[0].startswith("act, record 3")
    assert table.column("operationName").to_pylist() == [
        DIAG["operationName"],
        "Microsoft.Compute/virtualMachines/delete",
    ]
    assert table.column("category").to_pylist() == ["Administrative", "Administrative"]
    assert table.column("resourceProviderName").to_pylist() == ["MICROSOFT.NETWORK", "Microsoft.Compute"]
    assert table.column("_outcome").to_pylist() == ["success", "failure"]
    assert table.column("_user").to_pylist() == ["carol@contoso.com", "dave@contoso.com"]
    assert table.column("_src_ip").to_pylist() == ["203.0.113.9", "198.51.100.2"]
    assert table.column("properties.message").to_pylist()[0] == "Microsoft.Network/firewallPolicies/write"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    read(data)
