#!/usr/bin/python3
"""Validates the signed RRsets of a DNS message with dnspython, an implementation
independent of primwatch's (hickory-proto and ring).

stdin: JSON {"dnskey": text of a BIND .key file, "message": hex of a DNS message,
             "now": optional unix time to validate at}
stdout: JSON {"validated": ["www.example.test. A", ...],
              "unsigned": [...], "failed": ["NAME TYPE: reason", ...]}
"""
import json
import sys

import dns.dnssec
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

request = json.load(sys.stdin)
line = next(l for l in request["dnskey"].splitlines() if l.strip() and not l.lstrip().startswith(";"))
fields = line.split()
at = [f.upper() for f in fields].index("DNSKEY")
owner = dns.name.from_text(fields[0])
keys = {owner: dns.rrset.from_text(owner, 3600, "IN", "DNSKEY", " ".join(fields[at + 1:]))}

message = dns.message.from_wire(bytes.fromhex(request["message"]))
result = {"validated": [], "unsigned": [], "failed": []}
for rrset in message.answer:
    if rrset.rdtype == dns.rdatatype.RRSIG:
        continue
    label = f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
    try:
        sigs = message.find_rrset(message.answer, rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype)
    except KeyError:
        result["unsigned"].append(label)
        continue
    try:
        dns.dnssec.validate(rrset, sigs, keys, now=request.get("now"))
        result["validated"].append(label)
    except dns.dnssec.ValidationFailure as e:
        result["failed"].append(f"{label}: {e}")
print(json.dumps(result))
