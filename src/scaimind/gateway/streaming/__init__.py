"""scaimind/gateway/streaming"""
