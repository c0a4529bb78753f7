# EMR Serverless custom image for imagegraph: EMR's Spark image plus the interpreter the packed
# environment's bin/python links to (package.node_python in emr/launcher.yaml; EMR Serverless
# 7.x images have Python 3.9 only). Build it for linux/amd64, push it to ECR and set it on the
# application (docs/EMR.md); the launcher checks with get_application that it is there.
FROM public.ecr.aws/emr-serverless/spark/emr-7.12.0:latest
USER root
RUN dnf install -y python3.11 && dnf clean all
USER hadoop:hadoop
