"""scaimind/gateway/web"""
