# seqpack's Dataflow image: the custom SDK container the workers run, and the Flex Template launcher image.
#
#   gcloud builds submit --tag "$IMAGE" .            (or: docker build -t "$IMAGE" . && docker push "$IMAGE")
#
# The Beam SDK image must be exactly the apache-beam version pyproject.toml pins: the SDK that builds the job
# and the SDK in the workers must match. tests/test_dockerfile.py keeps the two in step, checks every path and
# setting below, and replays the RUN steps in a fresh virtualenv (SEQPACK_DOCKER_REPLAY=1).
# Commands for running jobs with this image: docs/dataflow.md.

FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS launcher

FROM apache/beam_python3.11_sdk:2.77.0

# With the Flex Template launcher binary in it, one image both launches the job and runs its workers.
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /opt/seqpack
COPY pyproject.toml README.md ./
COPY src ./src
COPY templates ./templates

# seqpack and what it needs on top of the SDK image; every package the image ships keeps its version (the
# image's grpcio, protobuf, numpy and pyarrow are the ones its Beam was tested with). torch is not installed:
# only the `loader` extra, on training machines, needs it.
RUN pip list --format=freeze --exclude pip --exclude setuptools --exclude wheel > sdk-image-packages.txt \
 && pip install --no-cache-dir --constraint sdk-image-packages.txt ".[gcp]" \
 && rm sdk-image-packages.txt
RUN pip check

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/seqpack/templates/flex/main.py
ENTRYPOINT ["/opt/apache/beam/boot"]
