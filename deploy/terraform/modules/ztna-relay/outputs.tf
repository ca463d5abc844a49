output "public_ip" {
  description = "Elastic IP of the relay: what connectors and agents put in relays (with the QUIC port)."
  value       = aws_eip.relay.public_ip
}

output "relay_address" {
  description = "host:port for the relays list of connector and agent configs."
  value       = "${aws_eip.relay.public_ip}:${var.quic_port}"
}

output "metrics_url" {
  description = "Prometheus target (reachable only from metrics_cidrs)."
  value       = "http://${aws_eip.relay.public_ip}:${var.metrics_port}/metrics"
}

output "instance_id" {
  description = "EC2 instance id (aws ssm start-session --target ...)."
  value       = aws_instance.relay.id
}

output "security_group_id" {
  description = "Security group of the relay."
  value       = aws_security_group.relay.id
}

output "vpc_id" {
  description = "VPC of the relay."
  value       = aws_vpc.this.id
}
