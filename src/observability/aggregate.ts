// Metrics of several processes (the agent and its tunnel workers) as one
// exposition: counters summed, process metrics per prom-client's own
// aggregation rules.
import client from 'prom-client';

export async function aggregateMetrics(own: client.Registry, others: unknown[]): Promise<string> {
  const all = [await own.getMetricsAsJSON(), ...others] as Parameters<typeof client.AggregatorRegistry.aggregate>[0];
  return client.AggregatorRegistry.aggregate(all).metrics();
}
