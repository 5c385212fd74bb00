// The folders of src/ and which way their imports may point (`make lint`).
// Data flows downwards: datapath ← tunnel ← waypoint ← roots, with the leaves (errors,
// protocol, identity, policy, state, observability) wired in by the roots,
// and the sources (sources/, kube/) feeding the model from beside it. The
// README's layout section draws the same picture.
/** A folder under src/ as a path pattern. */
const dir = (...names) => `^src/(${names.join('|')})/`;

/** Forbids `from` (folders) to import `to` (folders), with the reason. */
const never = (name, from, to, comment) => ({
  name,
  comment,
  severity: 'error',
  from: { path: dir(...from) },
  to: { path: dir(...to) },
});

module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'each concept is read and tested on top of what it uses, never in a loop with it',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'cli-only-parses',
      comment: 'the CLI reads flags and calls a root; nothing outside it imports it',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: dir('cli') },
    },
    never('waypoint-below-roots', ['datapath', 'tunnel', 'identity', 'policy', 'state', 'observability', 'protocol', 'control-plane', 'kube'], ['waypoint'],
      'the waypoint (L7) is built on the tunnel; only a root wires it in (sources/ may read its route model types)'),
    never('roots-are-top', ['datapath', 'tunnel', 'identity', 'policy', 'state', 'sources', 'kube', 'observability', 'protocol', 'control-plane', 'cni'], ['roots'],
      'a composition root wires the others; nothing below may reach up into one'),
    never('datapath-is-bottom', ['datapath'], ['tunnel', 'identity', 'policy', 'sources', 'kube', 'observability', 'protocol', 'control-plane'],
      'the datapath (eBPF, netns sockets, ports) knows nothing of the tunnel or the mesh above it'),
    never('tunnel-below-roots', ['tunnel'], ['sources', 'kube', 'control-plane'],
      'the data plane is handed its state; where the state comes from is the roots\' business'),
    never('model-is-a-leaf', ['state'], ['datapath', 'tunnel', 'sources', 'kube', 'observability', 'protocol', 'control-plane'],
      'the mesh model is plain data and indexes; sources feed it from beside'),
    never('policy-is-a-leaf', ['policy'], ['datapath', 'tunnel', 'sources', 'kube', 'observability', 'protocol', 'control-plane'],
      'policies are decided from the model alone'),
    never('identity-is-a-leaf', ['identity'], ['datapath', 'tunnel', 'state', 'policy', 'sources', 'kube', 'control-plane'],
      'certificates and the CA seam know nothing of the mesh state'),
    never('observability-is-a-leaf', ['observability'], ['tunnel', 'sources', 'kube', 'control-plane', 'policy'],
      'logs, metrics and the admin server serve every layer and depend on none above the model'),
    never('sources-beside-the-data-path', ['sources', 'kube'], ['datapath', 'tunnel', 'control-plane'],
      'a source turns files, xDS or the API server into the model; it never touches the data path'),
    never('control-plane-apart', ['control-plane'], ['datapath', 'tunnel'],
      'the control plane serves state and certificates; it has no data path'),
    never('cni-plugin-stands-alone', ['cni'], ['datapath', 'tunnel', 'waypoint', 'identity', 'policy', 'state', 'sources', 'kube', 'observability', 'protocol', 'control-plane'],
      'the CNI plugin runs in the kubelet\'s pod creation and starts on Node\'s built-ins alone; the agent side is wired to the mesh in roots/cni.ts'),
    {
      name: 'cli-loads-a-root-on-demand',
      comment:
        "every process runs src/cli/main.ts: it imports a command's root (and the one-shot tools) only once the command is known, " +
        'so a tunnel worker does not load the agent, the control plane or the waypoint',
      severity: 'error',
      from: { path: '^src/cli/main\\.ts$' },
      to: {
        path: '^src/(roots|sources|kube|control-plane|waypoint|identity)/|^src/tunnel/worker(-host)?\\.ts$|^src/cli/(tools|inspect)\\.ts$',
        dependencyTypesNot: ['dynamic-import', 'type-only'],
      },
    },
    {
      name: 'data-path-is-light',
      comment:
        'a tunnel worker (one or more per node) pays in memory for every module it loads: what it runs (the tunnel, datapath, ' +
        'policy, model, observability, TLS contexts) uses no gRPC, protobuf, X.509 issuing or YAML parsing; the agent does that for it',
      severity: 'error',
      from: { path: '^src/(tunnel|datapath|policy|state|observability)/|^src/identity/(tls|spiffe)\\.ts$' },
      to: {
        path: '^src/(roots|sources|kube|control-plane|waypoint)/|^src/identity/(cert-manager|builtin-ca|csr|ca-client)\\.ts$|node_modules/(@grpc|@peculiar|protobufjs|yaml|tsyringe)/',
        dependencyTypesNot: ['type-only'],
      },
    },
    {
      name: 'no-orphans',
      comment: 'a file nothing imports is dead code (entry points excepted)',
      severity: 'error',
      from: { orphan: true, path: '^src/', pathNot: '^src/(cli/main|cni/plugin)\\.ts$' },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true, // type-only imports count: a layer may not even name what is above it
    tsConfig: { fileName: 'tsconfig.json' },
    // Packages are leaves of the graph (doNotFollow), not excluded: a rule may name them.
    exclude: { path: '^dist/' },
  },
};
