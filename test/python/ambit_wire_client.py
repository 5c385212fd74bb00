#!/usr/bin/python3
"""An independent client of ambit's control plane, for wire compatibility.

Debian's protoc compiles ambit's own .proto files (proto/ at the repository
root) into Python modules, and Debian's python3-grpcio speaks to the server
with them: no code of ambit's is used on this side. It opens a delta ADS
stream as a node agent would (wildcard subscription to workloads/services and
authorization policies, every response decoded and ACKed), asks the CA for a
certificate on behalf of a workload on its node, and checks the refusals
(another node's identity, a wrong token, a stream naming another node). It
prints one JSON line summarising what it received.

    ambit_wire_client.py TARGET ROOT_CERT TOKEN NODE_NAME OWN_IDENTITY FOREIGN_IDENTITY
    ambit_wire_client.py --check     # only report missing Debian packages

Exit codes: 0 done (the JSON says what happened), 3 a Debian package is
missing (named on stderr), 1 anything else (stderr says what).

It runs with Debian's interpreter (/usr/bin/python3) on purpose: a python3
from pyenv or a virtualenv does not see the Debian python3-* packages.
"""
import importlib
import ipaddress
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile

PROTO_DIR = os.environ.get('AMBIT_PROTO_DIR') or os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'proto'))
WKT_INCLUDE = '/usr/include'
PROTO_FILES = [
    'google/rpc/status.proto',
    'envoy/config/core/v3/base.proto',
    'envoy/service/discovery/v3/discovery.proto',
    'istio/workload/workload.proto',
    'istio/security/authorization.proto',
    'istio/ca/ca.proto',
]
TYPE_ADDRESS = 'type.googleapis.com/istio.workload.Address'
TYPE_AUTHORIZATION = 'type.googleapis.com/istio.security.Authorization'
ADS_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources'
CA_METHOD = '/istio.v1.auth.IstioCertificateService/CreateCertificate'
TIMEOUT_S = 30
# A refusal is due at once (status on the first request); waiting longer only hides a server that never answers.
REFUSAL_TIMEOUT_S = 10


def missing_packages():
    """[(debian package, why)] of what this client needs and does not find."""
    missing = []
    try:
        import grpc  # noqa: F401
    except ImportError as e:
        missing.append(('python3-grpcio', f'import grpc: {e}'))
    try:
        import google.protobuf  # noqa: F401
    except ImportError as e:
        missing.append(('python3-protobuf', f'import google.protobuf: {e}'))
    if shutil.which('protoc') is None:
        missing.append(('protobuf-compiler', 'no protoc on PATH'))
    if not os.path.exists(os.path.join(WKT_INCLUDE, 'google/protobuf/struct.proto')):
        missing.append(('libprotobuf-dev', f'no {WKT_INCLUDE}/google/protobuf/struct.proto (the well-known types protoc imports)'))
    try:
        import cryptography  # noqa: F401
    except ImportError as e:
        if shutil.which('openssl') is None:
            missing.append(('python3-cryptography', f'import cryptography: {e}, and no openssl to fall back on'))
    return missing


def compile_protos(out_dir):
    """protoc --python_out for ambit's .proto files; returns the generated modules by short name."""
    cmd = ['protoc', '-I', PROTO_DIR, '-I', WKT_INCLUDE, f'--python_out={out_dir}', *PROTO_FILES]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f'protoc failed ({r.returncode}): {" ".join(cmd)}\n{r.stderr}')
    # google/ is a namespace package in Debian's python3-protobuf, so the
    # generated google/rpc joins it; istio/, envoy/ are namespace packages too.
    sys.path.insert(0, out_dir)
    return {
        'status': importlib.import_module('google.rpc.status_pb2'),
        'base': importlib.import_module('envoy.config.core.v3.base_pb2'),
        'discovery': importlib.import_module('envoy.service.discovery.v3.discovery_pb2'),
        'workload': importlib.import_module('istio.workload.workload_pb2'),
        'authorization': importlib.import_module('istio.security.authorization_pb2'),
        'ca': importlib.import_module('istio.ca.ca_pb2'),
    }


def ip_text(b):
    return ipaddress.ip_address(bytes(b)).compressed


def string_match(m):
    kind = m.WhichOneof('match_type')
    if kind == 'presence':
        return {'presence': True}
    return {kind: getattr(m, kind)} if kind else {}


class AdsStream:
    """One delta ADS stream: requests go in through a queue, responses come out of an iterator."""

    def __init__(self, grpc, channel, pb, token, timeout=TIMEOUT_S):
        self.grpc = grpc
        self.pb = pb
        self.requests = queue.Queue()
        method = channel.stream_stream(
            ADS_METHOD,
            request_serializer=pb['discovery'].DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=pb['discovery'].DeltaDiscoveryResponse.FromString,
        )
        self.call = method(self._requests(), metadata=[('authorization', f'Bearer {token}')], timeout=timeout)

    def _requests(self):
        while True:
            r = self.requests.get()
            if r is None:
                return
            yield r

    def send(self, req):
        self.requests.put(req)

    def close_send(self):
        self.requests.put(None)

    def node(self, node_name):
        n = self.pb['base'].Node(id='ztunnel~127.0.0.1~py.default~default.svc.cluster.local', cluster='Kubernetes')
        n.metadata.update({'NAME': 'py', 'NAMESPACE': 'default', 'INSTANCE_IPS': '127.0.0.1', 'NODE_NAME': node_name})
        return n

    def subscribe(self, type_url, node_name=None):
        req = self.pb['discovery'].DeltaDiscoveryRequest(type_url=type_url)  # resource_names_subscribe empty: wildcard
        if node_name is not None:
            req.node.CopyFrom(self.node(node_name))
        self.send(req)


def decode_address(pb, name, any_msg, out):
    a = pb['workload'].Address()
    if not any_msg.Unpack(a):
        raise RuntimeError(f'resource {name}: Any {any_msg.type_url} does not unpack as istio.workload.Address')
    kind = a.WhichOneof('type')
    if kind == 'workload':
        w = a.workload
        out['workloads'].append({
            'resource_name': name,
            'uid': w.uid,
            'name': w.name,
            'namespace': w.namespace,
            'addresses': [ip_text(x) for x in w.addresses],
            'tunnel_protocol': pb['workload'].TunnelProtocol.Name(w.tunnel_protocol),
            'trust_domain': w.trust_domain,
            'service_account': w.service_account,
            'node': w.node,
            'workload_type': pb['workload'].WorkloadType.Name(w.workload_type),
            'canonical_name': w.canonical_name,
            'status': pb['workload'].WorkloadStatus.Name(w.status),
            'cluster_id': w.cluster_id,
            'capacity': w.capacity.value if w.HasField('capacity') else None,
            'services': sorted(w.services.keys()),
            'service_ports': {k: [[p.service_port, p.target_port] for p in v.ports] for k, v in sorted(w.services.items())},
            'authorization_policies': list(w.authorization_policies),
        })
    elif kind == 'service':
        s = a.service
        out['services'].append({
            'resource_name': name,
            'name': s.name,
            'namespace': s.namespace,
            'hostname': s.hostname,
            'addresses': [ip_text(x.address) for x in s.addresses],
            'ports': [[p.service_port, p.target_port] for p in s.ports],
        })
    else:
        raise RuntimeError(f'resource {name}: Address with neither workload nor service')


def decode_authorization(pb, name, any_msg, out):
    p = pb['authorization'].Authorization()
    if not any_msg.Unpack(p):
        raise RuntimeError(f'resource {name}: Any {any_msg.type_url} does not unpack as istio.security.Authorization')
    principals = [string_match(s) for r in p.rules for c in r.clauses for m in c.matches for s in m.principals]
    out['policies'].append({
        'resource_name': name,
        'name': p.name,
        'namespace': p.namespace,
        'scope': pb['authorization'].Scope.Name(p.scope),
        'action': pb['authorization'].Action.Name(p.action),
        'dry_run': p.dry_run,
        'rules': len(p.rules),
        'principals': principals,
    })


def fetch_mesh(grpc, channel, pb, token, node_name):
    """Subscribes to both types, decodes and ACKs the first response of each, then closes cleanly."""
    out = {'workloads': [], 'services': [], 'policies': [], 'acked': [], 'removed': [], 'late_responses': 0}
    stream = AdsStream(grpc, channel, pb, token)
    stream.subscribe(TYPE_ADDRESS, node_name)  # the first request carries the node
    stream.subscribe(TYPE_AUTHORIZATION)
    waiting = {TYPE_ADDRESS, TYPE_AUTHORIZATION}
    responses = iter(stream.call)
    try:
        return _first_responses(stream, responses, waiting, pb, out)
    finally:
        stream.close_send()  # never leave grpc's request thread waiting on the queue


def _first_responses(stream, responses, waiting, pb, out):
    decoders = {TYPE_ADDRESS: decode_address, TYPE_AUTHORIZATION: decode_authorization}
    while waiting:
        resp = next(responses)
        if resp.type_url not in waiting:
            raise RuntimeError(f'unexpected response type {resp.type_url!r} (still waiting for {sorted(waiting)})')
        for r in resp.resources:
            if r.resource.type_url != resp.type_url:
                raise RuntimeError(f'resource {r.name}: Any type_url {r.resource.type_url!r} in a {resp.type_url} response')
            if not r.version:
                raise RuntimeError(f'resource {r.name}: empty version')
            decoders[resp.type_url](pb, r.name, r.resource, out)
        out['removed'].extend(resp.removed_resources)
        if not resp.nonce:
            raise RuntimeError(f'{resp.type_url} response without a nonce: it cannot be ACKed')
        stream.send(pb['discovery'].DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce))
        out['acked'].append(resp.type_url)
        waiting.discard(resp.type_url)
    # Half-close after the ACKs: the server should end the stream with OK
    # and push nothing more (the ACKs left nothing to resend).
    stream.close_send()
    for _ in responses:
        out['late_responses'] += 1
    out['stream_end'] = stream.call.code().name
    for k in ('workloads', 'services', 'policies'):
        out[k].sort(key=lambda x: x['resource_name'])
    return out


def refused_stream(grpc, channel, pb, token, node_name):
    """Opens a stream that the server must refuse; returns the status code name (OK if it was not)."""
    stream = AdsStream(grpc, channel, pb, token, timeout=REFUSAL_TIMEOUT_S)
    stream.subscribe(TYPE_ADDRESS, node_name)
    try:
        for _ in stream.call:
            stream.close_send()
        return 'OK'
    except grpc.RpcError as e:
        return e.code().name
    finally:
        stream.close_send()


def make_csr(identity):
    """(csr PEM, public key DER) of a fresh ECDSA P-256 key, with the identity as URI SAN as Istio agents send."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        return make_csr_openssl(identity)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
           .sign(key, hashes.SHA256()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return csr.public_bytes(serialization.Encoding.PEM).decode(), spki


def make_csr_openssl(identity):
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, 'key.pem')
        subprocess.run(['openssl', 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], check=True, capture_output=True)
        csr = subprocess.run(['openssl', 'req', '-new', '-key', key, '-subj', '/', '-addext', f'subjectAltName=critical,URI:{identity}'],
                             check=True, capture_output=True, text=True).stdout
        spki = subprocess.run(['openssl', 'pkey', '-in', key, '-pubout', '-outform', 'DER'], check=True, capture_output=True).stdout
        return csr, spki


def describe_chain(chain, spki, root_pem):
    """What a client checks of a returned chain: length, the leaf's URI SANs, its key, the signatures, the root."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    except ImportError:
        return describe_chain_openssl(chain)
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in chain]
    leaf = certs[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    leaf_spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def signed_by(child, parent):
        key = parent.public_key()
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(child.signature_hash_algorithm))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(), child.signature_hash_algorithm)
            else:
                return False
            return child.issuer == parent.subject
        except Exception:  # noqa: BLE001 — any failure means "not signed by"
            return False

    root = x509.load_pem_x509_certificate(root_pem.encode())
    return {
        'chain_length': len(certs),
        'leaf_uri_sans': uris,
        'leaf_key_is_csr_key': leaf_spki == spki,
        'chain_signatures_ok': all(signed_by(certs[i], certs[i + 1]) for i in range(len(certs) - 1)),
        'last_is_mesh_root': certs[-1] == root,
    }


def describe_chain_openssl(chain):
    with tempfile.NamedTemporaryFile('w', suffix='.pem') as f:
        f.write(chain[0])
        f.flush()
        text = subprocess.run(['openssl', 'x509', '-in', f.name, '-noout', '-ext', 'subjectAltName'], check=True, capture_output=True, text=True).stdout
    uris = [part.strip()[4:] for line in text.splitlines()[1:] for part in line.split(',') if part.strip().startswith('URI:')]
    return {'chain_length': len(chain), 'leaf_uri_sans': uris}


def create_certificate(grpc, channel, pb, token, identity, csr_pem):
    method = channel.unary_unary(
        CA_METHOD,
        request_serializer=pb['ca'].IstioCertificateRequest.SerializeToString,
        response_deserializer=pb['ca'].IstioCertificateResponse.FromString,
    )
    req = pb['ca'].IstioCertificateRequest(csr=csr_pem, validity_duration=3600)
    req.metadata.update({'ImpersonatedIdentity': identity})
    return method(req, metadata=[('authorization', f'Bearer {token}'), ('clusterid', 'Kubernetes')], timeout=TIMEOUT_S)


def status_of(grpc, fn):
    try:
        fn()
        return 'OK'
    except grpc.RpcError as e:
        return e.code().name


def main(argv):
    if argv[1:] == ['--check']:
        missing = missing_packages()
        for pkg, why in missing:
            print(f'ambit_wire_client: install the Debian package {pkg} ({why})', file=sys.stderr)
        return 3 if missing else 0
    if len(argv) != 7:
        print(__doc__, file=sys.stderr)
        return 1
    target, root_file, token, node_name, own_identity, foreign_identity = argv[1:]
    missing = missing_packages()
    if missing:
        for pkg, why in missing:
            print(f'ambit_wire_client: install the Debian package {pkg} ({why})', file=sys.stderr)
        return 3
    import grpc
    import google.protobuf

    with open(root_file) as f:
        root_pem = f.read()
    with tempfile.TemporaryDirectory(prefix='ambit-pb2-') as gen:
        pb = compile_protos(gen)
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root_pem.encode()))
        try:
            summary = {'versions': {'grpcio': grpc.__version__, 'protobuf': google.protobuf.__version__}}
            summary.update(fetch_mesh(grpc, channel, pb, token, node_name))

            csr_pem, spki = make_csr(own_identity)
            resp = create_certificate(grpc, channel, pb, token, own_identity, csr_pem)
            summary['certificate'] = describe_chain(list(resp.cert_chain), spki, root_pem)

            foreign_csr, _ = make_csr(foreign_identity)
            summary['errors'] = {
                'foreign_identity': status_of(grpc, lambda: create_certificate(grpc, channel, pb, token, foreign_identity, foreign_csr)),
                'wrong_token_certificate': status_of(grpc, lambda: create_certificate(grpc, channel, pb, token + '-wrong', own_identity, csr_pem)),
                'wrong_token_stream': refused_stream(grpc, channel, pb, token + '-wrong', node_name),
                'wrong_node_name_stream': refused_stream(grpc, channel, pb, token, node_name + '-other'),
            }
        finally:
            channel.close()
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
