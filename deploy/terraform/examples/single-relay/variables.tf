variable "region" {
  description = "AWS region to deploy the relay in."
  type        = string
  default     = "eu-central-1"
  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-central-1."
  }
}

variable "name" {
  description = "Name of the deployment (resource names and tags)."
  type        = string
  default     = "ztna-relay"
}

variable "release_repository" {
  description = "GitHub repository (owner/name) publishing the ztna-edge releases."
  type        = string
}

variable "release_version" {
  description = "Pinned ztna-edge release."
  type        = string
  default     = "0.1.0"
}

variable "release_sha256" {
  description = "SHA-256 of ztna-relay-x86_64-unknown-linux-gnu in that release's SHA256SUMS."
  type        = string
}

variable "metrics_cidrs" {
  description = "CIDR blocks Prometheus scrapes from."
  type        = list(string)
}

variable "services" {
  description = "Relay policy: service name to allowed connector and agent identities."
  type = map(object({
    connectors = list(string)
    agents     = list(string)
  }))
  default = {
    dns = { connectors = ["connector-1"], agents = ["agent-alice"] }
  }
}
