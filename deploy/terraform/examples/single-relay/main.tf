# Single-command deployment of one serving relay:
#   1. put the relay certificate, key and CA into SSM (SecureString), e.g.
#        aws ssm put-parameter --type SecureString --name /ztna/relay/tls.key --value file://relay.key
#   2. terraform init && terraform apply \
#        -var release_repository=OWNER/ztna-edge -var release_sha256=<from SHA256SUMS> \
#        -var 'metrics_cidrs=["203.0.113.0/24"]'
# and the relay listens on <relay_address> when apply returns (cloud-init finishes within a minute).

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

provider "aws" {
  region = var.region
}

module "relay" {
  source = "../../modules/ztna-relay"

  name               = var.name
  release_repository = var.release_repository
  release_version    = var.release_version
  release_sha256     = var.release_sha256
  metrics_cidrs      = var.metrics_cidrs
  services           = var.services
  tags               = { "ztna-edge/deployment" = var.name }
}
