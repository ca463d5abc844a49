output "relay_address" {
  description = "Put this in the relays list of connector and agent configs."
  value       = module.relay.relay_address
}

output "metrics_url" {
  description = "Prometheus target of the relay."
  value       = module.relay.metrics_url
}

output "instance_id" {
  description = "For aws ssm start-session --target."
  value       = module.relay.instance_id
}
