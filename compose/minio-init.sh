#!/bin/sh
# One-shot MinIO bootstrap (the `minio-init` service, image minio/mc): create the bucket named by
# FUSION_STORE_URL (s3://BUCKET/PREFIX) if it does not exist yet. Idempotent; exits non-zero on error
# so services that depend on it (service_completed_successfully) do not start against a missing bucket.
set -eu

url="${FUSION_STORE_URL:?FUSION_STORE_URL is not set}"
case "$url" in
  s3://*) ;;
  *) echo "minio-init: FUSION_STORE_URL=$url is not s3://, nothing to do"; exit 0 ;;
esac
rest="${url#s3://}"
bucket="${rest%%/*}"
if [ -z "$bucket" ]; then
  echo "minio-init: no bucket in FUSION_STORE_URL=$url" >&2
  exit 2
fi
endpoint="${FUSION_S3_ENDPOINT_URL:-http://minio:9000}"

tries=0
until mc alias set fusion "$endpoint" "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}" >/dev/null; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "minio-init: $endpoint not reachable" >&2
    exit 1
  fi
  sleep 1
done
mc mb --ignore-existing "fusion/$bucket"
echo "minio-init: bucket $bucket ready at $endpoint"
