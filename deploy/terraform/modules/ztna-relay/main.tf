# One relay on EC2: its own VPC and public subnet, a security group that opens UDP QUIC to peers
# and the metrics port only to the monitoring CIDRs, an Elastic IP (the address connectors and
# agents dial), and cloud-init that installs the pinned release binary (checksum verified), writes
# the config and the certificates (from SSM) and enables the hardened systemd unit.

data "aws_region" "current" {}

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

locals {
  tags = merge(var.tags, { "ztna-edge/component" = "relay" })
  az   = var.availability_zone != "" ? var.availability_zone : data.aws_availability_zones.available.names[0]
  relay_config = {
    listen              = "0.0.0.0:${var.quic_port}"
    metrics             = "0.0.0.0:${var.metrics_port}"
    tls                 = { cert = "/etc/ztna/tls/relay.pem", key = "/etc/ztna/tls/relay.key", ca = "/etc/ztna/tls/ca.pem" }
    services            = var.services
    log_level           = var.log_level
    drain_ms            = 3000
    shutdown_timeout_ms = 10000
  }
  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    release_url    = "https://github.com/${var.release_repository}/releases/download/v${var.release_version}/ztna-relay-x86_64-unknown-linux-gnu"
    release_sha256 = var.release_sha256
    relay_config   = jsonencode(local.relay_config)
    systemd_unit   = file("${path.module}/../../../systemd/ztna-relay.service")
    region         = data.aws_region.current.name
    ssm_cert       = var.tls_ssm_parameters.cert
    ssm_key        = var.tls_ssm_parameters.key
    ssm_ca         = var.tls_ssm_parameters.ca
  })
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = var.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  vpc_id                  = aws_vpc.this.id
  cidr_block              = var.subnet_cidr
  availability_zone       = local.az
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${var.name}-public" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = merge(local.tags, { Name = "${var.name}-public" })
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}

resource "aws_security_group" "relay" {
  name        = var.name
  description = "ztna-edge relay: QUIC from peers, metrics from monitoring only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = var.name })
}

resource "aws_vpc_security_group_ingress_rule" "quic" {
  for_each          = toset(var.quic_ingress_cidrs)
  security_group_id = aws_security_group.relay.id
  description       = "QUIC from connectors and agents"
  ip_protocol       = "udp"
  from_port         = var.quic_port
  to_port           = var.quic_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each          = toset(var.metrics_cidrs)
  security_group_id = aws_security_group.relay.id
  description       = "Prometheus scrapes and health checks"
  ip_protocol       = "tcp"
  from_port         = var.metrics_port
  to_port           = var.metrics_port
  cidr_ipv4         = each.value
}

# Outbound: HTTPS only (release download, SSM). QUIC replies to peers are return traffic of the
# stateful ingress rule; the relay never opens connections into private networks.
resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.relay.id
  description       = "Release download and AWS APIs"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "tls" {
  statement {
    actions = ["ssm:GetParameter"]
    resources = [
      for p in values(var.tls_ssm_parameters) :
      "arn:aws:ssm:${data.aws_region.current.name}:*:parameter${p}"
    ]
  }
}

resource "aws_iam_role" "relay" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "tls" {
  name   = "${var.name}-tls"
  role   = aws_iam_role.relay.id
  policy = data.aws_iam_policy_document.tls.json
}

# Shell access through SSM Session Manager instead of SSH: no port 22 anywhere.
resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.relay.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "relay" {
  name = var.name
  role = aws_iam_role.relay.name
}

resource "aws_instance" "relay" {
  ami                    = data.aws_ssm_parameter.al2023.value
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.public.id
  vpc_security_group_ids = [aws_security_group.relay.id]
  iam_instance_profile   = aws_iam_instance_profile.relay.name
  user_data              = local.user_data
  # A changed config or version replaces the instance: immutable relays, like the k8s pods.
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = 16
  }

  tags = merge(local.tags, { Name = var.name })
}

resource "aws_eip" "relay" {
  domain   = "vpc"
  instance = aws_instance.relay.id
  tags     = merge(local.tags, { Name = var.name })

  depends_on = [aws_internet_gateway.this]
}
