#!/usr/bin/env bash
# Build the skuvision SageMaker training image (docker/Dockerfile), push it to your ECR, print its URI.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build_and_push_image.sh [options]

Builds docker/Dockerfile on AWS's SMDDP PyTorch image (torch 2.4.1, SMDDP 2.5.0), pushes it to
<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag> (creating the repository if needed) and
prints that URI on stdout, ready for `hydra.launcher.image_uri=...` or SKUVISION_IMAGE_URI.

Options:
  --region REGION        AWS region of your ECR and training jobs (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-west-2)
  --repository NAME      ECR repository (default: skuvision)
  --tag TAG              image tag (default: git short hash, +"-dirty" with uncommitted changes)
  --account ID           your AWS account (default: from `aws sts get-caller-identity`)
  --base-account ID      account of AWS's base image registry (default: 658645717510)
  --base-tag TAG         base image tag (default: 2.4.1-gpu-py311-cu121)
  --models "NAMES"       timm models whose pretrained weights are baked in (default: "resnet152")
  --no-push              build and tag only
  --dry-run              print the commands instead of running them
  -h, --help             this help

Needs docker (with BuildKit) and the AWS CLI v2, with credentials allowed to pull AWS's base image
and push to your ECR (ecr:GetAuthorizationToken, ecr:BatchGetImage, ecr:InitiateLayerUpload, ...).
USAGE
}

REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-west-2}}"
REPOSITORY="skuvision"
TAG=""
ACCOUNT=""
BASE_ACCOUNT="658645717510"
BASE_TAG="2.4.1-gpu-py311-cu121"
MODELS="resnet152"
PUSH=1
DRY_RUN=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --region) REGION="${2:?--region needs a value}"; shift 2 ;;
    --repository) REPOSITORY="${2:?--repository needs a value}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
    --account) ACCOUNT="${2:?--account needs a value}"; shift 2 ;;
    --base-account) BASE_ACCOUNT="${2:?--base-account needs a value}"; shift 2 ;;
    --base-tag) BASE_TAG="${2:?--base-tag needs a value}"; shift 2 ;;
    --models) MODELS="${2:?--models needs a value}"; shift 2 ;;
    --no-push) PUSH=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build_and_push_image.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

run() {  # every side effect goes through here, so --dry-run shows the whole procedure
  if [[ "$DRY_RUN" == 1 ]]; then printf '+ %s\n' "$*" >&2; else "$@"; fi
}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "build_and_push_image.sh: $1 not found: $2" >&2; exit 1; }
}

if [[ "$DRY_RUN" == 0 ]]; then
  need docker "install Docker with BuildKit (https://docs.docker.com/engine/install/)"
  need aws "install the AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html)"
fi

if [[ -z "$TAG" ]]; then
  TAG="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || date +%Y%m%d-%H%M%S)"
  if [[ -n "$(git -C "$ROOT" status --porcelain -- src pyproject.toml docker 2>/dev/null)" ]]; then TAG="${TAG}-dirty"; fi
fi
if [[ -z "$ACCOUNT" ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then ACCOUNT="123456789012"; else
    ACCOUNT="$(aws sts get-caller-identity --query Account --output text)"
  fi
fi

BASE_REGISTRY="${BASE_ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com"
REGISTRY="${ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com"
IMAGE_URI="${REGISTRY}/${REPOSITORY}:${TAG}"

echo "building ${IMAGE_URI} from ${BASE_REGISTRY}/smdistributed-modelparallel:${BASE_TAG}" >&2
login() {  # $1: registry
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ aws ecr get-login-password --region %s | docker login --username AWS --password-stdin %s\n' "$REGION" "$1" >&2
  else
    aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$1" >&2
  fi
}
login "$BASE_REGISTRY"
run env DOCKER_BUILDKIT=1 docker build -f "$ROOT/docker/Dockerfile" \
  --build-arg "ACCOUNT=${BASE_ACCOUNT}" --build-arg "REGION=${REGION}" --build-arg "TAG=${BASE_TAG}" \
  --build-arg "PRETRAINED_MODELS=${MODELS}" -t "${REPOSITORY}:${TAG}" -t "${IMAGE_URI}" "$ROOT" >&2

if [[ "$PUSH" == 1 ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ aws ecr describe-repositories --repository-names %s || aws ecr create-repository ...\n' "$REPOSITORY" >&2
  elif ! aws ecr describe-repositories --region "$REGION" --repository-names "$REPOSITORY" >/dev/null 2>&1; then
    aws ecr create-repository --region "$REGION" --repository-name "$REPOSITORY" \
      --image-scanning-configuration scanOnPush=true >/dev/null
  fi
  login "$REGISTRY"
  run docker push "${IMAGE_URI}" >&2
fi
echo "${IMAGE_URI}"
